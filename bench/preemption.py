#!/usr/bin/env python
"""Soft-preemption benchmark: the end-to-end story on CPU, measured.

Against a real node worker (celery worker + node agent, also taking the central queue; Redis
broker; PostgreSQL) on this machine, with one-minute slots and a short notice so a round takes a
minute or two, each round:

  1. a low-priority research booking trains YOLOv8n (CPU device, 64 px) from its slot start;
  2. once it has checkpointed, a high-priority booking takes its GPU at the earliest start the
     notice allows;
  3. the reclaim happens, the preemptor's job starts, the research booking is rebooked.

It prints, per round and as p50/max: the notice lead time achieved (warning notice created ->
reclaim time), seconds from the reclaim time until the victim's last checkpoint is saved (ended_at)
and until its process has exited (GPU free), training progress lost (batches trained after the last
checkpoint), and seconds from the reclaim time until the preemptor's job is spawned and training.

    .venv/bin/python bench/preemption.py [--rounds 3] [--notice-seconds 20]

It drops and recreates the database `gpu_bench_preemption` (PostgreSQL at 127.0.0.1:5432, user
postgres; Redis at 127.0.0.1:6379, db 13).
"""

import argparse
import os
import signal
import tempfile
from pathlib import Path

from benchlib import machine, percentile, setup_environment, spec_maker, start_worker, wait_for

DB = "gpu_bench_preemption"
HOST = "bench-node"


def summary(values, unit):
    return f"p50 {percentile(values, 50):.2f} {unit}, max {max(values):.2f} {unit}  ({', '.join(f'{v:.2f}' for v in values)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notice-seconds", type=float, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="preemption-bench-"))
    setup_environment(
        DB, work, redis_db=13, CPU_DEVICE_COUNT="2", SLOT_MINUTES="1",
        PREEMPTION_NOTICE_MINUTES=str(args.notice_seconds / 60), PREEMPT_MIN_RUNTIME_MINUTES="0.1",
    )
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from reservations import policy
    from reservations.models import GPU, Membership, Notice, Reservation, Team
    from reservations.services import reservation_cancel, reservation_create
    from trainer.dataset import make_dataset
    from trainer.models import TrainingJob
    from trainer.runner import sha256_of

    data = make_dataset(work / "data" / "demo", images=32, size=64)
    team = Team.objects.create(name="Bench", slug="bench")
    researcher = get_user_model().objects.create_user("researcher")
    production = get_user_model().objects.create_user("production")
    admin = get_user_model().objects.create_user("admin", is_staff=True)
    production.user_permissions.add(Permission.objects.get(codename="book_high_priority"))
    for user in (researcher, production):
        Membership.objects.create(team=team, user=user)

    spec = spec_maker(data)

    def job_of(reservation):
        return TrainingJob.objects.get(reservation=reservation)

    log = open(work / "worker.log", "ab")
    worker = start_worker(log, HOST, central=True, concurrency=4)
    leads, saved, freed, lost, spawned, training = [], [], [], [], [], []
    try:
        gpu = wait_for(lambda: GPU.objects.filter(node__hostname=HOST).order_by("index").first(), 60, "the node")
        for round_ in range(args.rounds):
            research = reservation_create(
                user=researcher, gpu_ids=[gpu.pk], start=policy.ceil_to_slot(timezone.now()), slots=10,
                priority="low", work={"job": spec(300)},
            )
            wait_for(lambda: (job_of(research).checkpoint_epoch or 0) >= 1, 300, "research training")
            victim_pid = job_of(research).pid
            prod = reservation_create(
                user=production, gpu_ids=[gpu.pk], priority="high", slots=2, work={"job": spec(3)},
                start=policy.ceil_to_slot(timezone.now() + policy.notice_length()),
            )
            research.refresh_from_db()
            reclaim = research.reclaim_at
            notice = Notice.objects.get(reservation=research, kind="preemption_warning")
            leads.append((reclaim - notice.created).total_seconds())

            stopped = wait_for(
                lambda: (j := job_of(research)).status in ("stopped", "failed") and j.ended_at and j, 300, "the stop"
            )
            assert stopped.status == "stopped" and sha256_of(stopped.checkpoint) == stopped.checkpoint_sha256, stopped.reason
            saved.append((stopped.ended_at - reclaim).total_seconds())
            wait_for(lambda: not os.path.exists(f"/proc/{victim_pid}"), 60, "the victim's process to exit")
            freed.append((timezone.now() - reclaim).total_seconds())
            lost.append(stopped.batches_lost)
            started = wait_for(lambda: (j := job_of(prod)).started_at and j, 300, "the preemptor's training")
            spawned.append((started.spawned_at - reclaim).total_seconds())
            training.append((started.started_at - reclaim).total_seconds())
            rebook = Reservation.objects.get(rebook_of=research)
            resumed = wait_for(lambda: (j := job_of(rebook)).start_epoch is not None and j, 300, "the resume")
            assert resumed.start_epoch == stopped.checkpoint_epoch
            print(f"round {round_ + 1}: reclaim {reclaim:%H:%M:%S}, victim stopped at epoch {stopped.checkpoint_epoch}, "
                  f"rebooked #{rebook.pk} resumed at epoch {resumed.start_epoch + 1}", flush=True)
            for reservation in (prod, rebook):
                reservation_cancel(reservation_id=reservation.pk, actor=admin, reason="bench round done")
            wait_for(lambda: not TrainingJob.objects.filter(status__in=TrainingJob.LIVE).exists(), 300, "quiet")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    print(f"machine        : {machine()}")
    print(f"setup          : node worker (threads pool + agent + central queue), Redis, PostgreSQL; CPU devices; "
          f"YOLOv8n 64 px batch 4; 1-minute slots, notice {args.notice_seconds:g} s, min runtime 6 s; {args.rounds} rounds")
    print(f"notice lead    : warning notice -> reclaim time: {summary(leads, 's')}")
    print(f"checkpoint     : reclaim time -> victim's last checkpoint saved: {summary(saved, 's')}")
    print(f"GPU free       : reclaim time -> victim's process exited: {summary(freed, 's')}")
    print(f"progress lost  : batches trained after the last checkpoint: {', '.join(map(str, lost))}")
    print(f"preemptor      : reclaim time -> job spawned: {summary(spawned, 's')}")
    print(f"preemptor      : reclaim time -> training (on_train_start): {summary(training, 's')}")


if __name__ == "__main__":
    main()
