"""What the tests share besides fixtures (those stay in the conftest files): the frozen clock's
times, users and API clients, booking for set-up, polling for a condition, firing calls at the same
instant, and the database's own count of double bookings."""

import html
import re
import threading
import time
from datetime import datetime, timedelta, timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.utils import timezone
from rest_framework.authtoken.models import Token
from django.test import Client
from rest_framework.test import APIClient

from reservations import services
from reservations.models import Membership
from trainer.models import TrainingJob

# The `frozen` fixture stops the clock at FROZEN_NOW (a Monday, 09:17 UTC), so the next slot
# boundary is always NEXT_SLOT.
FROZEN_NOW = datetime(2030, 1, 7, 9, 17, tzinfo=dt_timezone.utc)
NEXT_SLOT = datetime(2030, 1, 7, 10, 0, tzinfo=dt_timezone.utc)
SLOT = timedelta(hours=2)
RESERVATIONS_URL = "/api/v1/reservations/"


def iso(moment):
    return moment.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_user(username, team=None, role=Membership.Role.MEMBER, **extra):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def page_client(user, zone=None, **kwargs):
    """A browser-like client signed in (by session) as `user`; `zone` is the time zone its pages show
    (the cookie static/js/app.js sets from the browser)."""
    client = Client(**kwargs)
    client.force_login(user)
    if zone:
        client.cookies["tz"] = zone
    return client


def text_of(response):
    """A page as text, tags, scripts and extra white space dropped: what a person reads."""
    body = re.sub(r"<script\b.*?</script>", " ", response.content.decode(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def book(user, gpus, *, start=NEXT_SLOT, slots=1, **kwargs):
    """Book through the service, as the API would, for test set-up."""
    return services.reservation_create(
        user=user, gpu_ids=[g.pk for g in gpus], start=start, slots=slots, now=timezone.now(), **kwargs
    )


def job_ran(reservation, started_at, ended_at=None, status="completed"):
    """A training job as the node agent reports it: when training began and ended."""
    return TrainingJob.objects.create(
        reservation=reservation, spec={"model": "yolov8n.yaml", "data": "/d/data.yaml", "epochs": 5},
        epochs=5, status=status, spawned_at=started_at, started_at=started_at, ended_at=ended_at,
    )


def wait_for(predicate, timeout, what):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def at_once(calls, timeout=120):
    """Run each zero-argument callable in a thread of its own, all released at the same instant by a
    barrier, and return their results in order; an exception in any of them is raised here."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def run(index, call):
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()  # each thread opened a database connection of its own

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), f"a racer was still running after {timeout}s"
    if errors:
        raise errors[0]
    return results


def race(clients, body, **headers):
    """Every client POSTs to the reservations endpoint at the same instant; returns the responses.
    `body` is the one body they all send, or a list of one body per client."""
    bodies = body if isinstance(body, list) else [body] * len(clients)
    return at_once(
        [lambda c=client, b=b: c.post(RESERVATIONS_URL, b, format="json", **headers) for client, b in zip(clients, bodies)]
    )


def overlapping_live_pairs():
    """Pairs of live allocations of one GPU whose times overlap, counted in SQL (not through the
    app's own checks): a double booking makes this non-zero."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM reservations_allocation a JOIN reservations_allocation b
              ON a.gpu_id = b.gpu_id AND a.id < b.id AND a.live AND b.live
             AND a.start < b."end" AND b.start < a."end"
            """
        )
        return cursor.fetchone()[0]
