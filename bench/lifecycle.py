#!/usr/bin/env python
"""Slot lifecycle benchmark: how promptly training starts and stops, and what the service costs.

Against a real node worker (celery worker + node agent, Redis broker, PostgreSQL) on this machine,
training YOLO on CPU devices with the synthetic demo dataset:

  1. Start latency, over --starts bookings: slot start -> training process running (spawned_at).
  2. Stop latency, for the same jobs stopped mid-training by a cancel: cancel -> resumable
     checkpoint saved and the process exited (ended_at).
  3. Wall time of one --epochs run under the service (process start to exit) vs the same
     model.train(...) called directly in a fresh process, best of --repeats each.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 user postgres, Redis at 127.0.0.1:6379):

    .venv/bin/python bench/lifecycle.py [--starts 20] [--epochs 10] [--repeats 3]

It drops and recreates the database `gpu_bench_lifecycle`. Targets: start p50 <= 1 s and p99 <= 5 s,
wall-time ratio <= 1.03.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benchlib import REPO, machine, percentile, setup_environment, spec_maker, start_worker, wait_for

DB = "gpu_bench_lifecycle"
HOST = "bench-node"


def booking_with_job(user, team, gpu, spec, starts_in):
    from django.utils import timezone

    from reservations.models import Allocation, Reservation
    from trainer.models import TrainingJob
    from trainer.services import job_create

    start = timezone.now() + starts_in
    reservation = Reservation.objects.create(
        user=user, team=team, start=start, end=start + timedelta(hours=2), gpu_count=1, status="confirmed"
    )
    Allocation.objects.create(reservation=reservation, gpu=gpu, start=start, end=reservation.end)
    job_create(reservation=reservation, spec=spec, now=timezone.now())
    return reservation, TrainingJob.objects.get(reservation=reservation)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    setup_environment(DB, work, redis_db=14, CPU_DEVICE_COUNT="1")
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from reservations.models import GPU, Membership, Team
    from reservations.services import reservation_cancel
    from trainer.dataset import make_dataset
    from trainer.models import TrainingJob
    from trainer.runner import sha256_of

    data = make_dataset(work / "data" / "demo", images=32, size=64)
    user = get_user_model().objects.create_user("bench")
    team = Team.objects.create(name="Bench", slug="bench")
    Membership.objects.create(team=team, user=user)

    spec = spec_maker(data)

    log = open(work / "worker.log", "ab")
    worker = start_worker(log, HOST)
    try:
        gpu = wait_for(lambda: GPU.objects.filter(node__hostname=HOST).first(), 60, "the node to register")
        starts, stops = [], []
        for _ in range(args.starts):
            # A random sub-second offset: slot starts are not in phase with the agent's 1 s loop.
            offset = timedelta(seconds=2 + random.random())
            reservation, job = booking_with_job(user, team, gpu, spec(50), offset)
            spawned = wait_for(lambda: TrainingJob.objects.get(pk=job.pk).spawned_at, 60, "the start")
            starts.append((spawned - reservation.start).total_seconds())
            wait_for(lambda: TrainingJob.objects.get(pk=job.pk).status == "running", 120, "training to run")
            pid = TrainingJob.objects.get(pk=job.pk).pid  # the runner clears it when it finishes
            asked = timezone.now()
            reservation_cancel(reservation_id=reservation.pk, actor=user, reason="bench")
            done = wait_for(
                lambda: (j := TrainingJob.objects.get(pk=job.pk)).status in ("stopped", "failed") and j.ended_at and j,
                400, "the stop",
            )
            assert done.status == "stopped" and sha256_of(done.checkpoint) == done.checkpoint_sha256, done.reason
            # ended_at is written by the child just before it exits: count until the process is gone.
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the process to exit")
            stops.append((timezone.now() - asked).total_seconds())

        service_runs = []
        for _ in range(args.repeats):
            reservation, job = booking_with_job(user, team, gpu, spec(args.epochs), timedelta(seconds=1))
            pid = wait_for(lambda: TrainingJob.objects.get(pk=job.pk).pid, 60, "the start")
            finished = wait_for(
                lambda: (j := TrainingJob.objects.get(pk=job.pk)).status in ("completed", "failed") and j.ended_at and j,
                1800, "the service run",
            )
            assert finished.status == "completed", finished.reason
            # Like the direct run, from process start to process exit.
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the process to exit")
            service_runs.append((timezone.now() - finished.spawned_at).total_seconds())
            # It finished inside its first slot, so nothing was released: free the GPU for the next run.
            reservation_cancel(reservation_id=reservation.pk, actor=user, reason="bench run done")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    direct_runs = []
    script = (
        "from ultralytics import YOLO; "
        f"YOLO('yolov8n.yaml').train(data={str(data)!r}, epochs={args.epochs}, imgsz=64, batch=4, seed=0, "
        f"device='cpu', workers=0, plots=False, amp=False, project={str(work / 'direct')!r}, name='run', exist_ok=True)"
    )
    for _ in range(args.repeats):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True,
                       env=dict(os.environ, YOLO_OFFLINE="1", CUDA_VISIBLE_DEVICES=""))
        direct_runs.append(time.monotonic() - began)

    ratio = min(service_runs) / min(direct_runs)
    print(f"machine   : {machine()}")
    print("setup     : node worker (celery threads pool + agent), Redis broker, PostgreSQL; CPU device; "
          "YOLOv8n, 64 px, batch 4, 24 train / 8 val images")
    print(f"start     : slot start -> training process running, {len(starts)} starts: "
          f"p50 {percentile(starts, 50):.2f} s, p99 {percentile(starts, 99):.2f} s, max {max(starts):.2f} s")
    print(f"stop      : cancel -> resumable checkpoint saved and process exited, {len(stops)} stops: "
          f"p50 {percentile(stops, 50):.2f} s, p99 {percentile(stops, 99):.2f} s, max {max(stops):.2f} s")
    print(f"wall time : {args.epochs} epochs under the service {min(service_runs):.1f} s (runs {', '.join(f'{s:.1f}' for s in service_runs)}), "
          f"direct model.train {min(direct_runs):.1f} s (runs {', '.join(f'{s:.1f}' for s in direct_runs)}); ratio {ratio:.3f}")
    targets = [
        ("start p50 <= 1 s", percentile(starts, 50) <= 1),
        ("start p99 <= 5 s", percentile(starts, 99) <= 5),
        ("wall-time ratio <= 1.03", ratio <= 1.03),
    ]
    for name, met in targets:
        print(f"[{'MET ' if met else 'MISS'}] {name}")


if __name__ == "__main__":
    main()
