"""The whole soft-preemption story with real components: a node worker (also taking the central
queue), Redis, PostgreSQL, real ultralytics training on CPU devices, a real HTTP server for the
team webhook. Slots are one minute and the notice 15 seconds here, so the story takes minutes."""

import pytest
from django.utils import timezone

from reservations import policy
from reservations.models import GPU, AuditEntry, Reservation
from trainer.models import TrainingJob
from trainer.runner import sha256_of

from ..receivers import WebhookReceiver
from ..support import client_for, iso, make_user, wait_for
from ..workers import NodeWorker, kill_training_children, purge_central_queue

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
HOST = "preemption-node"
URL = "/api/v1/reservations/"


def job_of(reservation_id):
    return TrainingJob.objects.get(reservation_id=reservation_id)


def test_a_high_booking_reclaims_a_training_research_job_which_resumes_in_its_rebooking(
    short_slots, training_data, tmp_path, team, high_booker
):
    researcher = make_user("researcher", team, email="researcher@example.org")
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 300, "imgsz": 64, "batch": 4}
    purge_central_queue()
    worker = NodeWorker(
        tmp_path / "node.log", HOST, central=True,
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(tmp_path / "mail"),
    )
    with WebhookReceiver() as receiver:
        team.webhook_url = receiver.url
        team.save()
        worker.start()
        try:
            gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
            # A low-priority research booking of ten one-minute slots, training from its start.
            research = client_for(researcher).post(
                URL,
                {"gpus": [gpu.pk], "start": iso(policy.ceil_to_slot(timezone.now())), "slots": 10,
                 "priority": "low", "title": "research", "job": spec},
                format="json",
            ).json()
            assert research["preemptible"] is True
            wait_for(lambda: (job_of(research["id"]).checkpoint_epoch or 0) >= 2, 300, "research training")

            # A production booking for the same GPU, as soon as the notice allows.
            start = policy.ceil_to_slot(timezone.now() + policy.notice_length())
            booked_at = timezone.now()
            response = client_for(high_booker).post(
                URL,
                {"gpus": [gpu.pk], "start": iso(start), "slots": 2, "priority": "high", "title": "prod",
                 "job": dict(spec, epochs=2)},
                format="json",
            )
            assert response.status_code == 201, response.content
            prod = response.json()

            # The notice is there at once, with the reclaim time and the GPU; webhook and e-mail follow.
            notice = client_for(researcher).get("/api/v1/notices/").json()["results"][0]
            assert notice["kind"] == "preemption_warning" and notice["reservation"] == research["id"]
            assert notice["data"]["reclaim_at"] == iso(start) and notice["data"]["gpus"] == [gpu.pk]
            assert (start - booked_at).total_seconds() >= 15  # at least the notice
            hook = wait_for(lambda: next((c for c in receiver.received if c["json"]["kind"] == "preemption_warning"), None), 60, "the webhook")
            assert hook["json"]["data"]["reclaim_at"] == iso(start)
            wait_for(lambda: (tmp_path / "mail").exists() and any((tmp_path / "mail").iterdir()), 60, "the e-mail")

            # Not before the reclaim time, the research job stops with a resumable checkpoint...
            stopped = wait_for(
                lambda: (j := job_of(research["id"])).status in ("stopped", "failed") and j, 240, "the research job to stop"
            )
            assert stopped.status == "stopped", stopped.reason
            assert stopped.ended_at >= start and "Preempted by reservation" in stopped.reason
            assert sha256_of(stopped.checkpoint) == stopped.checkpoint_sha256
            assert stopped.batches_lost == 0  # the stop saved everything it trained
            victim = wait_for(
                lambda: (r := Reservation.objects.get(pk=research["id"])).status == "preempted" and r, 60, "the reclaim"
            )
            assert victim.preempted_by_id == prod["id"] and victim.end == start

            # ...the production job starts on that GPU once it is free...
            prod_job = wait_for(
                lambda: (j := job_of(prod["id"])).spawned_at and j, 120, "the production job to start"
            )
            assert prod_job.spawned_at >= stopped.ended_at and prod_job.node == stopped.node
            assert list(Reservation.objects.get(pk=prod["id"]).allocations.values_list("gpu_id", flat=True)) == [gpu.pk]

            # ...and the research booking, rebooked, resumes from its checkpoint's next epoch.
            rebook = Reservation.objects.get(rebook_of=research["id"])
            assert rebook.user == researcher and rebook.priority == "low"
            resumed = wait_for(
                lambda: (j := job_of(rebook.pk)).start_epoch is not None and j, 240, "the rebooked job to resume"
            )
            assert resumed.resumed_from_id == stopped.pk
            assert resumed.start_epoch == stopped.checkpoint_epoch
            assert "Resuming training" in open(resumed.log_path).read()
            actions = set(AuditEntry.objects.filter(reservation_id=research["id"]).values_list("action", flat=True))
            assert {"preempt", "notice", "reclaim"} <= actions
            assert AuditEntry.objects.filter(action="rebook", reservation=rebook).exists()
        finally:
            worker.stop()
            kill_training_children()
