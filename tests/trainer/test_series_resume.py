"""A recurring booking's job with "resume_from": "previous": resolved once when it is due to start
(trainer.services.job_resolve_previous, which the node agent calls) to the job of the latest earlier
booking of the series that saved a checkpoint; it waits while an earlier one is live, and starts fresh
when none left a checkpoint. Time frozen at 09:17 (next slot 10:00, slots of two hours)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reservations import services
from reservations.errors import BookingError
from reservations.models import Reservation
from reservations.services.series import series_create
from trainer import services as trainer_services
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")
DAY = timedelta(days=1)
TEMPLATE = {"model": "yolov8n.yaml", "data": "/d/data.yaml", "epochs": 50, "resume_from": "previous"}


def daily_jobs(user, gpu, count=3, slots=1, **extra):
    """A daily series from the next slot with the template job; its jobs in occurrence order."""
    result = series_create(
        user=user, start=NEXT_SLOT, slots=slots, rule=f"FREQ=DAILY;COUNT={count}", gpu_ids=[gpu.pk],
        work={"job": dict(TEMPLATE)}, now=timezone.now(), **extra,
    )
    return [o.reservation.job for o in result.of("booked")]


def ran(job, status="stopped", checkpoint_epoch=3, epochs=50):
    """What the runner records of a run: its status and, if it saved one, its checkpoint."""
    checkpoint = f"/runs/job-{job.pk}/checkpoints/epoch-{checkpoint_epoch:04d}.pt" if checkpoint_epoch else ""
    TrainingJob.objects.filter(pk=job.pk).update(
        status=status, checkpoint=checkpoint, checkpoint_epoch=checkpoint_epoch, epochs=epochs
    )


def fresh(job):
    return TrainingJob.objects.select_related("reservation").get(pk=job.pk)


def test_each_occurrence_is_booked_with_a_job_saying_previous_and_resuming_nothing_yet(cluster, owner):
    jobs = daily_jobs(owner, cluster["node1"][0])

    assert len(jobs) == 3
    assert all(j.spec["resume_from"] == "previous" and j.resumed_from_id is None for j in jobs)
    assert all(j.reservation.series_id == jobs[0].reservation.series_id for j in jobs)


def test_a_job_resumes_from_the_previous_occurrences_checkpoint(cluster, owner):
    first, second, _ = daily_jobs(owner, cluster["node1"][0])
    ran(first)

    assert trainer_services.job_resolve_previous(job=fresh(second)) is True

    resolved = fresh(second)
    assert resolved.resumed_from_id == first.pk and resolved.spec["resume_from"] == first.pk
    assert resolved.reason == f"Resumes from job {first.pk} of the series' occurrence at 2030-01-07 10:00 UTC."
    assert resolved.status == "queued" and trainer_services.job_ready_to_start(resolved)
    assert trainer_services.resume_source(resolved) == fresh(first)


def test_it_skips_an_earlier_occurrence_that_left_no_checkpoint(cluster, owner):
    first, second, third = daily_jobs(owner, cluster["node1"][0])
    ran(first, checkpoint_epoch=4)
    ran(second, status="failed", checkpoint_epoch=None)  # failed before its first checkpoint

    trainer_services.job_resolve_previous(job=fresh(third))

    assert fresh(third).resumed_from_id == first.pk
    assert "occurrence at 2030-01-07 10:00 UTC" in fresh(third).reason


def test_the_latest_earlier_booking_by_start_wins_not_the_latest_made(cluster, owner):
    first, second, third = daily_jobs(owner, cluster["node1"][0])
    ran(second)
    ran(first)  # the earlier occurrence's row written last changes nothing

    trainer_services.job_resolve_previous(job=fresh(third))

    assert fresh(third).resumed_from_id == second.pk


def test_it_waits_while_an_earlier_occurrences_job_is_live_then_resumes_from_it(cluster, owner):
    first, second, _ = daily_jobs(owner, cluster["node1"][0])
    ran(first, status="stopping")  # overrunning on other GPUs, or still saving its last checkpoint

    assert trainer_services.job_resolve_previous(job=fresh(second)) is False

    waiting = fresh(second)
    assert waiting.spec["resume_from"] == "previous" and waiting.resumed_from_id is None
    assert waiting.reason == (
        f"Waits for job {first.pk} of an earlier occurrence of the series to end: it may still be saving."
    )
    ran(first, status="stopped", checkpoint_epoch=5)
    assert trainer_services.job_resolve_previous(job=fresh(second)) is True
    assert fresh(second).resumed_from_id == first.pk


def test_it_starts_fresh_when_no_earlier_occurrence_left_a_checkpoint(cluster, owner):
    first, second, _ = daily_jobs(owner, cluster["node1"][0])
    assert trainer_services.job_resolve_previous(job=fresh(first)) is True  # the first has none before it
    assert fresh(first).resumed_from_id is None and "resume_from" not in fresh(first).spec
    ran(first, status="failed", checkpoint_epoch=None)

    assert trainer_services.job_resolve_previous(job=fresh(second)) is True

    resolved = fresh(second)
    assert resolved.resumed_from_id is None and "resume_from" not in resolved.spec
    assert resolved.reason == "No earlier occurrence left a checkpoint: starts fresh."
    assert trainer_services.resume_source(resolved) is None  # the runner trains from the spec's model


def test_it_is_resolved_once_and_a_second_agent_reads_the_first_ones_answer(cluster, owner):
    first, second, _ = daily_jobs(owner, cluster["node1"][0])
    ran(first, status="failed", checkpoint_epoch=None)
    one, other = fresh(second), fresh(second)  # two agents read the waiting job
    assert trainer_services.job_resolve_previous(job=one) is True
    # Had the second agent resolved it now, it would have found this checkpoint.
    ran(first, status="stopped", checkpoint_epoch=2)

    assert trainer_services.job_resolve_previous(job=other) is True

    assert other.resumed_from_id is None and "resume_from" not in other.spec
    assert fresh(second).resumed_from_id is None
    assert trainer_services.job_resolve_previous(job=fresh(second)) is True
    assert fresh(second).resumed_from_id is None


def test_a_completed_previous_occurrence_is_named_for_a_fine_tune(cluster, owner):
    first, second, _ = daily_jobs(owner, cluster["node1"][0])
    ran(first, status="completed", checkpoint_epoch=50, epochs=50)

    trainer_services.job_resolve_previous(job=fresh(second))

    resolved = fresh(second)
    assert resolved.resumed_from_id == first.pk
    assert resolved.reason.endswith("which finished training: fine-tunes its final weights.")
    assert trainer_services.source_finished(fresh(first))


def test_an_occurrence_of_another_series_is_never_the_previous_one(cluster, owner, teammate):
    (theirs,) = daily_jobs(teammate, cluster["node1"][1], count=1)
    ran(theirs)
    mine = daily_jobs(owner, cluster["node1"][0])

    trainer_services.job_resolve_previous(job=fresh(mine[1]))

    assert fresh(mine[1]).resumed_from_id is None


def test_the_rest_of_a_preempted_occurrence_whose_job_never_started_still_resumes_from_previous(
    cluster, owner, high_booker, frozen
):
    first, second, _ = daily_jobs(owner, cluster["node1"][0], slots=3, priority="low")
    series_id = second.reservation.series_id
    ran(first)
    # The second occurrence (tomorrow 10:00-16:00) has begun; its job has not started.
    frozen.move_to(second.reservation.start + timedelta(minutes=20))
    services.reservations_advance()

    response = client_for(high_booker).post(
        "/api/v1/reservations/",
        {"gpus": [cluster["node1"][0].pk], "start": iso(second.reservation.start + timedelta(hours=2)), "slots": 1,
         "priority": "high"},
        format="json",
    )

    assert response.status_code == 201, response.content
    rest = Reservation.objects.get(rebook_of=second.reservation)
    assert rest.series_id == series_id and rest.job.spec["resume_from"] == "previous"
    assert trainer_services.job_resolve_previous(job=fresh(rest.job)) is True
    assert fresh(rest.job).resumed_from_id == first.pk


def test_previous_is_refused_outside_a_series(cluster, owner):
    with pytest.raises(BookingError) as refused:
        book(owner, cluster["node1"][:1], work={"job": dict(TEMPLATE)})

    assert refused.value.field == "job" and "for a recurring booking" in str(refused.value)
    assert not TrainingJob.objects.exists()
