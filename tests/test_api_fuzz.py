"""Whatever a client sends, the API answers without a server error: a property-based run of every
operation in the OpenAPI schema, valid and invalid inputs alike, against a live server."""

import json
from datetime import timedelta, timezone as dt_timezone

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings, strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from reservations import policy

from .support import book, make_user

pytestmark = pytest.mark.fuzz

# Generated requests per operation, on top of schemathesis' fixed coverage cases: about a minute
# for the whole schema on two cores.
EXAMPLES = 100

# Every offset Python can hold (PostgreSQL holds fewer), at any time it can hold in that offset.
any_offset = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda minutes: dt_timezone(timedelta(minutes=minutes)))
any_moment = st.datetimes(timezones=any_offset)


def boundary_ahead(slots, offset):
    """The slot boundary `slots` slots from now (read when drawn: the suite may run for a while)."""
    return (policy.ceil_to_slot(timezone.now()) + slots * policy.slot_length()).astimezone(offset)


# Slot boundaries inside the horizon, in any offset as clients write them: times a booking can have.
bookable = st.builds(
    boundary_ahead,
    st.integers(1, django_settings.BOOKING_HORIZON_DAYS * 24 * 60 // django_settings.SLOT_MINUTES - 2),
    any_offset,
)
schemathesis.openapi.format("date-time", st.one_of(any_moment, bookable).map(lambda moment: moment.isoformat()))

# The operations are collected before any server runs, so the document comes from the generator
# that serves /api/schema/ rather than over HTTP: schemathesis' fixture-based loader, which could
# fetch it from the live server, fails on this pytest (it sets the removed Node._nodeid).
document = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(public=True)))
schema = schemathesis.openapi.from_dict(document)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES)

# Ids of the rows the `existing` fixture made, read while generating: random ids are all 404s.
existing_ids = []


@schema.hooks.hook("flatmap_path_parameters")
def sometimes_an_existing_id(context, parameters):
    if isinstance(parameters, dict) and "slug" in parameters:
        # The fuzzing user's team (the `team` fixture): a random slug is a 404 before any input is read.
        return st.one_of(st.just(parameters), st.just({**parameters, "slug": "vision"}))
    if not isinstance(parameters, dict) or "id" not in parameters or not existing_ids:
        return st.just(parameters)
    return st.one_of(st.just(parameters), st.sampled_from(existing_ids).map(lambda pk: {**parameters, "id": pk}))


@schema.hooks.hook("flatmap_body").apply_to(method="POST", path="/api/v1/reservations/")
def sometimes_bookable(context, body):
    # A generated booking almost never passes validation (random GPU ids, dataset paths that do not
    # exist), which would leave the code that books untried.
    if not isinstance(body, dict):
        return st.just(body)
    request = st.fixed_dictionaries(
        {
            "gpu_count": st.integers(1, 8),
            "start": st.one_of(st.sampled_from([policy.EARLIEST, policy.NOW]), bookable.map(lambda t: t.isoformat())),
            "slots": st.integers(1, 24),
        }
    )
    rest = {key: value for key, value in body.items() if key not in ("gpus", "gpu_count", "job", "team")}
    return st.one_of(st.just(body), request.map(lambda fields: {**rest, **fields}))


@pytest.fixture
def user(transactional_db, team):
    # Staff and a team member, so that every operation (the audit log included) gets past its
    # permission check to the code that reads the input.
    return make_user("fuzzer", team, is_staff=True)


@pytest.fixture
def token(user):
    return Token.objects.create(user=user).key


@pytest.fixture
def existing(cluster, user):
    gpus = cluster["node1"] + cluster["node2"]
    reservation = book(user, gpus[:2], start=boundary_ahead(1, dt_timezone.utc))
    existing_ids[:] = sorted({reservation.pk, *(gpu.pk for gpu in gpus), *(gpu.node_id for gpu in gpus)})
    yield
    existing_ids.clear()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_is_answered_with_a_server_error(case, live_server, existing, token):
    case.call_and_validate(
        base_url=live_server.url, headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error]
    )
