"""The calendar's event feed: server time for one week over 64 GPUs, with a little and with a lot of
history in the database, and the calendar page's weight.

    .venv/bin/python bench/calendar_feed.py [--totals 1000 100000] [--requests 50]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); recreates the database
`gpu_bench_calendar` for each total. 16 nodes x 4 GPUs. The week shown is the same in every run:
each GPU holds 6 bookings in it (384, some multi-GPU and some preemptible, a few with a job); the
rest of the total is history before it, so any difference between the totals is what history costs.
Requests go through Django's test client in this process (no server, no network): the time is the
server's, from the request's first middleware to the JSON's last byte. Targets: under 50 ms, and
the 100,000-booking figure within 2x of the 1,000 one.
"""

import argparse
import gzip
import os
import re
import statistics
import time
from datetime import timedelta

from benchlib import REPO, django_setup, in_process_env, machine, migrate, percentile, recreate_database

DB = "gpu_bench_calendar"
NODES, GPUS_PER_NODE = 16, 4
IN_WEEK_PER_GPU = 6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--totals", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--requests", type=int, default=50, help="timed requests per total (after 5 warm-up)")
    args = parser.parse_args()
    env = in_process_env(DB, VAR_DIR=str(REPO / "var" / "bench"))
    django_setup(env)
    from django.db import connections

    results, weight = [], None
    for total in args.totals:
        connections.close_all()  # recreate_database ends every session of the last total's database
        version = recreate_database(DB)
        migrate(env={**os.environ, **env})
        results.append((total, *run(total, args.requests)))
        weight = weight or page_weight()
    report(results, weight, version, args.requests)


def run(total, requests):
    # Django's modules only once it is set up for this database.
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from reservations import policy

    week_start = policy.floor_to_slot(timezone.now()) + timedelta(days=1)
    week_start = week_start.replace(hour=0)
    user = fill(total, week_start)
    connection.close()  # the inserts' session: the requests start from a fresh one, as a server's would
    client = Client()
    client.force_login(user)
    window = {"start": week_start.isoformat(), "end": (week_start + timedelta(days=7)).isoformat()}
    first = client.get("/calendar/events/", window)
    assert first.status_code == 200, first.content[:500]
    events = [e for e in first.json() if e.get("display") != "background"]
    for _ in range(4):
        client.get("/calendar/events/", window)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/calendar/events/", window)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return len(events), len(first.content), timings


def fill(total, week_start):
    """`total` bookings: IN_WEEK_PER_GPU per GPU in the week shown, the rest back to back before it."""
    from django.contrib.auth import get_user_model

    from reservations import policy
    from reservations.models import Allocation, Membership, Reservation, Team
    from reservations.services import Device, node_register
    from trainer.models import TrainingJob

    slot = policy.slot_length()
    gpus = []
    for n in range(NODES):
        node = node_register(
            hostname=f"node{n:02}",
            devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"n{n}-{i}") for i in range(GPUS_PER_NODE)],
        )
        gpus += list(node.gpus.order_by("index"))
    teams = [Team.objects.create(name=f"Team {t}", slug=f"team{t}", colour=f"#{40 * t:02x}79a7") for t in range(4)]
    users = [get_user_model().objects.create_user(f"user{u}") for u in range(16)]
    for u, user in enumerate(users):
        Membership.objects.create(team=teams[u % 4], user=user)

    rows = []  # (gpu_ids, start, end)
    for g, gpu in enumerate(gpus):
        # The week: 6 bookings of 2 slots, every 28 hours, shifted per GPU.
        for k in range(IN_WEEK_PER_GPU):
            start = week_start + (g % 7) * slot + k * 14 * slot
            rows.append(([gpu.pk], start, start + 2 * slot))
    history = total - len(rows)
    per_gpu = -(-history // len(gpus)) if history > 0 else 0
    for g, gpu in enumerate(gpus):
        for k in range(per_gpu):
            if len(rows) >= total:
                break
            end = week_start - k * 2 * slot
            rows.append(([gpu.pk], end - 2 * slot, end))
    reservations = Reservation.objects.bulk_create(
        [
            Reservation(
                user=users[i % 16], team=teams[(i % 16) % 4], title=f"run {i}", start=start, end=end,
                gpu_count=len(ids), preemptible=i % 5 == 0,
                status=Reservation.Status.CONFIRMED if start >= week_start else Reservation.Status.COMPLETED,
            )
            for i, (ids, start, end) in enumerate(rows)
        ],
        batch_size=5000,
    )
    Allocation.objects.bulk_create(
        [
            Allocation(reservation=r, gpu_id=gpu_id, start=r.start, end=r.end)
            for r, (ids, _, _) in zip(reservations, rows)
            for gpu_id in ids
        ],
        batch_size=5000,
    )
    TrainingJob.objects.bulk_create(
        [TrainingJob(reservation=r, spec={}, epochs=10) for r in reservations[: len(gpus) * IN_WEEK_PER_GPU : 7]]
    )
    return users[0]


def page_weight():
    """The calendar page's HTML and the assets it loads, as sent (whitenoise serves the .gz)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="user0"))
    html = client.get("/").content
    assets = re.findall(rb'(?:href|src)="/static/([^"]+)"', html)
    parts = [("page HTML", len(html), len(gzip.compress(html)))]
    for name in assets:
        body = (settings.BASE_DIR / "static" / name.decode()).read_bytes()
        parts.append((name.decode(), len(body), len(gzip.compress(body))))
    return parts


def report(results, weight, version, requests):
    print(f"machine  : {machine()}; PostgreSQL {version}")
    print(f"feed     : GET /calendar/events/ for one week x {NODES * GPUS_PER_NODE} GPUs, {requests} requests after warm-up, in process")
    print(f"{'bookings in DB':>15} {'events':>7} {'JSON KB':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for total, events, size, timings in results:
        print(
            f"{total:15,} {events:7} {size / 1024:8.1f} {statistics.median(timings):7.1f} "
            f"{percentile(timings, 95):7.1f} {max(timings):7.1f}"
        )
    if len(results) >= 2:
        low, high = statistics.median(results[0][3]), statistics.median(results[-1][3])
        print(f"ratio    : p50 with {results[-1][0]:,} / with {results[0][0]:,} = {high / low:.2f} (target <= 2)")
        print(f"target   : p50 under 50 ms: {'met' if max(low, high) < 50 else 'NOT met'}")
    print("page     : calendar page and the assets it loads (bytes; gzip as whitenoise sends them)")
    for name, raw, packed in weight:
        print(f"  {name:48} {raw:9,} {packed:9,}")
    print(f"  {'total':48} {sum(p[1] for p in weight):9,} {sum(p[2] for p in weight):9,}")


if __name__ == "__main__":
    main()
