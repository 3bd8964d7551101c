"""A recurring booking whose job resumes from the previous occurrence, with real components: a node
worker, Redis, PostgreSQL and real ultralytics training on CPU devices. The series is daily; its
second and third occurrences are moved (as their owner may) to the two one-minute slots right after
the first (the `short_slots` fixture), so the three nights train in turn within minutes."""

import pytest
from django.utils import timezone

from reservations import policy
from reservations.models import GPU
from reservations.services import reservation_move
from reservations.services.series import series_create
from trainer.models import TrainingJob
from trainer.spec import JobSpecSerializer

from ..support import make_user, wait_for
from ..workers import NodeWorker, kill_training_children

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
HOST = "series-node"


def job(job_id):
    return TrainingJob.objects.get(pk=job_id)


def started(job_id, what):
    """The job once its training began (its start epoch is on record)."""
    return wait_for(lambda: (j := job(job_id)).start_epoch is not None and j, 240, what)


def stopped(job_id, what):
    found = wait_for(lambda: (j := job(job_id)).status in TrainingJob.FINISHED and j, 240, what)
    assert found.status == "stopped", found.reason
    return found


def test_each_occurrence_of_a_series_resumes_from_the_previous_ones_checkpoint(
    short_slots, training_data, tmp_path, team
):
    owner = make_user("nightly", team)
    template = JobSpecSerializer(
        data={"model": "yolov8n.yaml", "data": str(training_data), "epochs": 300, "imgsz": 64, "batch": 4,
              "resume_from": "previous"}
    )
    template.is_valid(raise_exception=True)
    worker = NodeWorker(tmp_path / "node.log", HOST).start()
    try:
        gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
        first = policy.ceil_to_slot(timezone.now())
        result = series_create(
            user=owner, start=first, slots=1, rule="FREQ=DAILY;COUNT=3", gpu_ids=[gpu.pk],
            work={"job": dict(template.validated_data)}, now=timezone.now(),
        )
        bookings = [o.reservation for o in result.of("booked")]
        assert len(bookings) == 3
        for nth, booking in enumerate(bookings[1:], start=1):
            reservation_move(reservation_id=booking.pk, actor=owner, start=first + nth * policy.slot_length(), slots=1)
        ids = [booking.job.pk for booking in bookings]

        # The first night has no earlier one: it trains from the spec's model until its slot ends.
        one = started(ids[0], "the first occurrence's training")
        assert one.resumed_from_id is None and one.start_epoch == 0
        one = stopped(ids[0], "the first occurrence's job to stop at its slot's end")
        assert one.checkpoint_epoch >= 1

        # The second resumes from the first's checkpoint, from the next epoch...
        two = started(ids[1], "the second occurrence's training")
        assert two.resumed_from_id == ids[0] and two.start_epoch == one.checkpoint_epoch
        assert two.spec["resume_from"] == ids[0]
        assert "Resuming training" in open(two.log_path).read()
        two = stopped(ids[1], "the second occurrence's job to stop")
        assert two.checkpoint_epoch > one.checkpoint_epoch

        # ...and the third from the second's.
        three = started(ids[2], "the third occurrence's training")
        assert three.resumed_from_id == ids[1] and three.start_epoch == two.checkpoint_epoch
        wait_for(
            lambda: (j := job(ids[2])).checkpoint_epoch and j.checkpoint_epoch > two.checkpoint_epoch and j,
            240, "the third occurrence's first checkpoint",
        )
    finally:
        worker.stop()
        kill_training_children()
