"""Notices are kept NOTICE_RETENTION_DAYS (beat's daily task): then the read ones go, in short
batches, unless an e-mail or a webhook is still being delivered for them; unread ones stay."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reservations import services, tasks
from reservations.models import Notice
from reservations.services.notices import GAVE_UP, NOT_SENT

from ..support import make_user

NOW = datetime(2030, 1, 7, 9, 17, tzinfo=dt_timezone.utc)
CUTOFF = NOW - timedelta(days=365)
OLD = CUTOFF - timedelta(days=30)


@pytest.fixture
def person(team):
    return make_user("reader", team, email="reader@example.org")


def notice(user, created=OLD, read=True, **delivery):
    """A notice as time left it: made at `created`, read a minute later (or not), its deliveries in
    whatever state `delivery` says."""
    return Notice.objects.create(
        user=user, kind=Notice.Kind.SLOT_ENDING, message="Your slot ends in 10 minutes.", created=created,
        read_at=created + timedelta(minutes=1) if read else None, **delivery,
    )


def remaining():
    return set(Notice.objects.values_list("pk", flat=True))


def test_read_notices_older_than_the_retention_go_and_the_rest_stay(person):
    old_read = notice(person, emailed_at=OLD)
    old_unread = notice(person, read=False, emailed_at=OLD)
    recent_read = notice(person, created=CUTOFF + timedelta(days=1), emailed_at=CUTOFF)

    assert services.notices_prune(older_than=CUTOFF) == 1

    assert remaining() == {old_unread.pk, recent_read.pk}
    assert old_read.pk not in remaining()


@pytest.mark.parametrize("delivery", [
    {"email_claimed_at": OLD},  # being sent (claimed, not sent)
    {"email_error": "SMTPServerDisconnected: Connection unexpectedly closed"},  # a retry to come
    {"email_claimed_at": OLD, "email_error": "SMTPServerDisconnected: gone"},
    {"webhook_attempts": 1},  # being posted
    {"webhook_attempts": 3, "webhook_error": "HTTP 503 Service Unavailable"},  # a retry to come
    {"emailed_at": OLD, "webhook_attempts": 2, "webhook_error": "ConnectError: refused"},
])
def test_a_read_notice_whose_delivery_is_under_way_stays(person, delivery):
    kept = notice(person, **delivery)

    assert services.notices_prune(older_than=CUTOFF) == 0
    assert remaining() == {kept.pk}


@pytest.mark.parametrize("delivery", [
    {},  # no e-mail or webhook was ever begun for it
    {"emailed_at": OLD, "email_claimed_at": OLD},
    {"email_error": f"{GAVE_UP}SMTPServerDisconnected: gone"},
    {"email_claimed_at": OLD, "email_error": f"{NOT_SENT}ValueError: bad address"},
    {"webhook_attempts": 1, "webhook_delivered_at": OLD},
    {"webhook_attempts": 9, "webhook_error": f"{GAVE_UP}HTTP 500 Internal Server Error"},
    {"emailed_at": OLD, "webhook_attempts": 9, "webhook_error": f"{GAVE_UP}ConnectError: refused"},
])
def test_a_read_notice_whose_deliveries_are_over_goes(person, delivery):
    notice(person, **delivery)

    assert services.notices_prune(older_than=CUTOFF) == 1
    assert remaining() == set()


def test_they_go_in_batches_of_a_bounded_size_and_number(person):
    for _ in range(7):
        notice(person, emailed_at=OLD)
    newest = notice(person, created=CUTOFF + timedelta(hours=1))

    with CaptureQueriesContext(connection) as queries:
        assert services.notices_prune(older_than=CUTOFF, batch_size=3, max_batches=2) == 6
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2
    assert len(remaining()) == 2

    assert services.notices_prune(older_than=CUTOFF, batch_size=3, max_batches=2) == 1
    assert remaining() == {newest.pk}


def test_the_daily_task_keeps_notices_for_the_configured_days(person, settings, frozen):
    settings.NOTICE_RETENTION_DAYS = 30
    month_old = notice(person, created=NOW - timedelta(days=31))
    fresh = notice(person, created=NOW - timedelta(days=29))

    assert tasks.notices_prune() == 1
    assert remaining() == {fresh.pk}
    assert month_old.pk not in remaining()


def test_a_retention_of_zero_keeps_every_notice(person, settings, frozen):
    settings.NOTICE_RETENTION_DAYS = 0
    ancient = notice(person, created=NOW - timedelta(days=3650))

    assert tasks.notices_prune() == 0
    assert remaining() == {ancient.pk}
