"""Fair sharing's whole story with real components: a node worker (also taking the central queue),
Redis, PostgreSQL and real ultralytics training on CPU devices. A team over its quota borrows an idle
GPU and trains; a team within its quota takes it back with notice; the borrowed booking stops with a
checkpoint, is rebooked as borrowed time and resumes. Slots are one minute and the notice 15 seconds
(the `short_slots` fixture), as in the preemption story, so it takes minutes."""

import pytest
from django.utils import timezone

from reservations import policy
from reservations.models import GPU, AuditEntry, Reservation
from reservations.services.quota import team_quota_set
from trainer.models import TrainingJob
from trainer.runner import sha256_of

from ..support import client_for, iso, make_user, wait_for
from ..workers import NodeWorker, kill_training_children, purge_central_queue

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
HOST = "fair-share-node"
URL = "/api/v1/reservations/"


def job_of(reservation_id):
    return TrainingJob.objects.get(reservation_id=reservation_id)


def test_a_team_over_its_quota_borrows_a_gpu_and_a_team_within_its_quota_reclaims_it_with_notice(
    short_slots, training_data, tmp_path, team, other_team, staff
):
    borrower, owner = make_user("borrower", team), make_user("reclaimer", other_team)
    team_quota_set(team=team, actor=staff, gpu_hours_per_week=2)
    team_quota_set(team=other_team, actor=staff, gpu_hours_per_week=10)
    # Team A has used its two GPU-hours this week already (a booking that ran from the week's start).
    week = policy.week_start(timezone.now())
    Reservation.objects.create(
        user=borrower, team=team, start=week, end=week + policy.slot_length() * 120, gpu_count=1, status="completed"
    )
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 300, "imgsz": 64, "batch": 4}
    purge_central_queue()
    worker = NodeWorker(tmp_path / "node.log", HOST, central=True).start()
    try:
        gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
        # Team A, over its quota: without borrowing a 409 that says it may borrow; with it, booked.
        body = {"gpus": [gpu.pk], "start": iso(policy.ceil_to_slot(timezone.now())), "slots": 10, "job": spec}
        refused = client_for(borrower).post(URL, body, format="json")
        assert refused.status_code == 409 and refused.json()["quota"]["borrowable"] is True, refused.content
        borrowed = client_for(borrower).post(URL, dict(body, borrow=True), format="json").json()
        assert borrowed["borrowed"] is True and borrowed["preemptible"] is True, borrowed
        wait_for(lambda: (job_of(borrowed["id"]).checkpoint_epoch or 0) >= 2, 300, "the borrowed booking's training")

        # Team B, within its quota, books that GPU at normal priority from the earliest start the
        # notice allows: it takes the borrowed time back.
        start = policy.ceil_to_slot(timezone.now() + policy.notice_length())
        response = client_for(owner).post(
            URL, {"gpus": [gpu.pk], "start": iso(start), "slots": 2, "job": dict(spec, epochs=2)}, format="json"
        )
        assert response.status_code == 201, response.content
        reclaiming = response.json()
        assert reclaiming["borrowed"] is False and reclaiming["priority"] == "normal"

        # Team A is warned at once: when, and that team B's quota is why.
        notice = client_for(borrower).get("/api/v1/notices/").json()["results"][0]
        assert notice["kind"] == "preemption_warning" and notice["reservation"] == borrowed["id"]
        assert notice["data"]["reclaim_at"] == iso(start) and notice["data"]["borrowed"] is True
        assert notice["data"]["reclaimed_by_team"] == other_team.slug
        assert f"team {other_team.name} is within its quota" in notice["message"]
        assert "of 10 GPU-h in week" in notice["message"]

        # Not before the reclaim time, A's job stops with a resumable checkpoint...
        stopped = wait_for(
            lambda: (j := job_of(borrowed["id"])).status in ("stopped", "failed") and j, 240, "the borrowed job to stop"
        )
        assert stopped.status == "stopped", stopped.reason
        assert stopped.ended_at >= start
        assert sha256_of(stopped.checkpoint) == stopped.checkpoint_sha256
        victim = wait_for(
            lambda: (r := Reservation.objects.get(pk=borrowed["id"])).status == "preempted" and r, 60, "the reclaim"
        )
        assert victim.preempted_by_id == reclaiming["id"] and victim.end == start

        # ...B's booking trains on that GPU once it is free...
        b_job = wait_for(lambda: (j := job_of(reclaiming["id"])).spawned_at and j, 120, "team B's job to start")
        assert b_job.spawned_at >= stopped.ended_at and b_job.node == stopped.node

        # ...and A's booking, rebooked as borrowed time, resumes from its checkpoint's next epoch.
        rebook = Reservation.objects.get(rebook_of=borrowed["id"])
        assert client_for(borrower).get(f"{URL}{rebook.pk}/").json()["borrowed"] is True
        resumed = wait_for(lambda: (j := job_of(rebook.pk)).start_epoch is not None and j, 240, "the rebooked job to resume")
        assert resumed.resumed_from_id == stopped.pk and resumed.start_epoch == stopped.checkpoint_epoch
        # B's job, running since before A's resumed, trains its first epoch meanwhile.
        wait_for(lambda: (job_of(reclaiming["id"]).checkpoint_epoch or 0) >= 1, 240, "team B's training")

        actions = set(AuditEntry.objects.filter(reservation_id=borrowed["id"]).values_list("action", flat=True))
        assert {"borrow", "preempt", "reclaim"} <= actions
        assert AuditEntry.objects.filter(action="rebook", reservation=rebook).exists()
    finally:
        worker.stop()
        kill_training_children()
