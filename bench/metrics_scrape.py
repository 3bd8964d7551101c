"""How long a Prometheus scrape of the web's /metrics takes: 64 GPUs (16 nodes x 4), 10,000 bookings
with some jobs, and the multiprocess files of 16 gunicorn workers.

    .venv/bin/python bench/metrics_scrape.py [--workers 16] [--bookings 10000] [--scrapes 30]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); recreates the database
`gpu_bench_metrics`. Each "worker" is a real process that sets up Django with
PROMETHEUS_MULTIPROC_DIR and records what a web worker records (request latency for every view,
method and a few statuses, as after a day of traffic) and exits, leaving its file behind as a
gunicorn worker does. The scrapes then go through Django's test client in this process: the
multiprocess collector reads and merges all the files, and the database collector runs its queries.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

from benchlib import REPO, django_setup, in_process_env, machine, migrate, percentile, recreate_database

DB = "gpu_bench_metrics"

# One web worker's day: every URL name with both methods and every status class (more than a day
# brings: most views answer one method).
WORKER = """
import os, random, sys
sys.path.insert(0, {repo!r})
import django
django.setup()
from django.urls import get_resolver
from ops.metrics import REQUEST_SECONDS
names = sorted({{n for n in get_resolver().reverse_dict.keys() if isinstance(n, str)}})
for name in names:
    for method in ("GET", "POST"):
        for status in ("2xx", "3xx", "4xx", "5xx"):
            for _ in range(5):
                REQUEST_SECONDS.labels(view=name, method=method, status=status).observe(random.random() / 10)
print(len(names))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()

    files = tempfile.mkdtemp(prefix="metrics-bench-")
    env = in_process_env(DB, PROMETHEUS_MULTIPROC_DIR=files, VAR_DIR=str(REPO / "var" / "bench"))
    version = recreate_database(DB)
    migrate(env={**env, "PATH": "/usr/bin:/bin"})
    django_setup(env)
    names = 0
    for _ in range(args.workers):
        run = subprocess.run([sys.executable, "-c", WORKER.format(repo=str(REPO))], env={**env, "PATH": "/usr/bin:/bin"},
                             cwd=REPO, capture_output=True, text=True, check=True)
        names = int(run.stdout.split()[-1])
    fill(args.bookings)

    from django.test import Client

    client = Client(REMOTE_ADDR="127.0.0.1")
    first = client.get("/metrics")
    assert first.status_code == 200, first.content[:300]
    timings = []
    for _ in range(args.scrapes):
        started = time.perf_counter()
        response = client.get("/metrics")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    series = sum(1 for line in first.content.decode().splitlines() if line and not line.startswith("#"))
    print(f"machine  : {machine()}; PostgreSQL {version}")
    print(f"setup    : 64 GPUs, {args.bookings:,} bookings, {args.workers} workers' files ({names} URL names each)")
    print(f"response : {len(first.content) / 1024:.0f} KB, {series:,} samples")
    print(f"scrape   : p50 {statistics.median(timings):.1f} ms, p95 {percentile(timings, 95):.1f} ms, max {max(timings):.1f} ms"
          f" over {args.scrapes} scrapes")


def fill(count):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from reservations import policy
    from reservations.models import Allocation, Membership, Reservation, Team
    from reservations.services import Device, node_register
    from trainer.models import TrainingJob

    gpus = []
    for n in range(16):
        node = node_register(hostname=f"node{n:02}", devices=[Device(index=i, model="A100", memory_mb=81920) for i in range(4)])
        gpus += list(node.gpus.order_by("index"))
    team = Team.objects.create(name="Bench", slug="bench")
    user = get_user_model().objects.create_user("bench")
    Membership.objects.create(team=team, user=user)
    slot, now = policy.slot_length(), policy.floor_to_slot(timezone.now())
    rows = [(gpus[i % 64], now + (i // 64 - count // 128) * slot) for i in range(count)]
    reservations = Reservation.objects.bulk_create(
        [Reservation(user=user, team=team, start=s, end=s + slot, gpu_count=1,
                     status="completed" if s + slot <= now else "confirmed") for _, s in rows],
        batch_size=5000,
    )
    Allocation.objects.bulk_create(
        [Allocation(reservation=r, gpu=g, start=r.start, end=r.end) for r, (g, _) in zip(reservations, rows)], batch_size=5000
    )
    TrainingJob.objects.bulk_create(
        [TrainingJob(reservation=r, spec={}, epochs=5, status="completed", started_at=r.start,
                     ended_at=r.start + timedelta(minutes=50)) for r in reservations[::10]],
        batch_size=5000,
    )


if __name__ == "__main__":
    main()
