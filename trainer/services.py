"""Writes for training jobs. The booking service creates a job with its reservation.

reservations.services imports this module, so calls back into it are imported where they are used.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reservations import policy
from reservations.errors import BookingError
from reservations.models import Allocation, Node, Notice, Reservation

from .models import TrainingJob


def job_spec_check(*, user, team, spec):
    """Rules a serializer cannot check alone: what `resume_from` may name."""
    source_id = spec.get("resume_from")
    if source_id is None:
        return spec
    source = TrainingJob.objects.select_related("reservation").filter(pk=source_id).first()
    if source is None:
        raise BookingError("job", f"resume_from: no job {source_id}.")
    if not user.is_staff and source.reservation.team_id != team.pk:
        raise BookingError("job", f"resume_from: job {source_id} belongs to another team.")
    if not source.checkpoint:
        raise BookingError("job", f"resume_from: job {source_id} has no checkpoint to resume from.")
    return spec


def job_create(*, reservation, spec):
    """Inside the booking's transaction: the job waits (queued) for its slot."""
    return TrainingJob.objects.create(
        reservation=reservation,
        spec=spec,
        epochs=spec["epochs"],
        resumed_from_id=spec.get("resume_from"),
        reason="Booked; waits for the slot to start.",
        created=timezone.now(),
    )


def job_stop_for_booking(*, reservation, reason):
    """The booking ends now (cancelled): a job still waiting ends with it; a live one is asked to
    stop with a checkpoint, and its node's worker hears at once (its agent would see it within a
    second anyway)."""
    job = TrainingJob.objects.filter(reservation=reservation).first()
    if job is None:
        return
    if job.status in TrainingJob.WAITING:
        TrainingJob.objects.filter(pk=job.pk, status__in=TrainingJob.WAITING).update(
            status=TrainingJob.Status.STOPPED, reason=reason, ended_at=timezone.now()
        )
    elif job_request_stop(job_id=job.pk, reason=reason):
        node, _ = job_placement(job)
        if node is not None:
            from .tasks import send_stop  # tasks -> agent -> reservations.services -> here

            transaction.on_commit(lambda: send_stop(job, node.hostname, reason))


def node_queue(hostname):
    return f"node.{hostname}"


def job_placement(job):
    """(node, devices) for a job: the node of its GPUs and their CUDA indices ([] for CPU devices)."""
    gpus = [a.gpu for a in job.reservation.allocation_list]
    nodes = {g.node_id for g in gpus}
    if len(nodes) != 1:
        return None, None
    devices = [] if all(g.model == "cpu" for g in gpus) else [g.index for g in gpus]
    return gpus[0].node, devices


def overrun_deadline(reservation):
    """When a job still running past its booking must stop: up to OVERRUN_GRACE_PCT of the booking's
    length after its end, but never past the start of the next booking on any of its GPUs."""
    grace = (reservation.end - reservation.start) * settings.OVERRUN_GRACE_PCT / 100
    gpu_ids = [a.gpu_id for a in reservation.allocation_list]
    next_start = (
        Allocation.objects.filter(gpu_id__in=gpu_ids, live=True, start__gte=reservation.end)
        .exclude(reservation_id=reservation.pk)
        .order_by("start")
        .values_list("start", flat=True)
        .first()
    )
    deadline = reservation.end + grace
    return min(deadline, next_start) if next_start else deadline


def stop_deadline(reservation, job):
    """When the agent stops a live job: at its booking's end plus any overrun grace; a preempted
    booking's job at the reclaim time, but never within its minimum runtime (policy.reclaim_time)."""
    if reservation.preempted_by_id is not None:
        return policy.reclaim_time(reservation.end, job.spawned_at)
    return overrun_deadline(reservation)


def job_ready_to_start(job):
    """A job that resumes another waits until that one has exited, so it resumes from its final
    checkpoint (a preempted job may still be saving when the rebooked one's slot begins)."""
    if job.resumed_from_id is None:
        return True
    return not TrainingJob.objects.filter(pk=job.resumed_from_id, status__in=TrainingJob.LIVE).exists()


def resume_source(job):
    """The checkpoint a job starts from: its own (it was interrupted), else the newest one along
    the jobs it resumes (one that stopped before its first checkpoint passes on its source's)."""
    seen = set()
    while job is not None and job.pk not in seen:
        if job.checkpoint:
            return job.checkpoint
        seen.add(job.pk)
        job = job.resumed_from
    return None


def job_claim_start(*, job_id, node, devices, now=None):
    """Atomically move a queued or interrupted job to starting: a second start is a no-op."""
    claimed = TrainingJob.objects.filter(pk=job_id, status__in=TrainingJob.WAITING).update(
        status=TrainingJob.Status.STARTING,
        node=node,
        devices=",".join(map(str, devices)) or "cpu",
        reason="Starting on the booked devices.",
        updated=now or timezone.now(),
    )
    return claimed == 1


def job_request_stop(*, job_id, reason):
    """Mark a live job stopping (the runner then records "stopped", not "interrupted")."""
    return TrainingJob.objects.filter(
        pk=job_id, status__in=[TrainingJob.Status.STARTING, TrainingJob.Status.RUNNING]
    ).update(status=TrainingJob.Status.STOPPING, reason=reason, updated=timezone.now())


def job_exited(*, job_id, returncode, killed):
    """The child is gone. If it did not record an end itself, record one now."""
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None or job.status in TrainingJob.FINISHED + (TrainingJob.Status.INTERRUPTED,):
        return job
    if killed:
        status, reason = TrainingJob.Status.STOPPED, (
            f"Killed after the stop grace; the checkpoint on record is from epoch {job.checkpoint_epoch or 0}."
        )
    elif job.status == TrainingJob.Status.STOPPING:
        status, reason = TrainingJob.Status.STOPPED, "Stopped."
    else:
        status, reason = TrainingJob.Status.INTERRUPTED, f"The training process exited unexpectedly (code {returncode})."
    TrainingJob.objects.filter(pk=job_id).exclude(status__in=TrainingJob.FINISHED).update(
        status=status, reason=reason, ended_at=timezone.now(), pid=None
    )
    return job


def nodes_mark_lost(*, now=None):
    """Nodes silent for NODE_LOST_SECONDS go offline; their live jobs are interrupted (and resumed
    from their checkpoints when the node is back inside the booking)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.NODE_LOST_SECONDS)
    lost = list(Node.objects.filter(online=True, last_heartbeat__lt=cutoff).values_list("pk", flat=True))
    if not lost:
        return 0
    Node.objects.filter(pk__in=lost).update(online=False)
    return TrainingJob.objects.filter(node_id__in=lost, status__in=TrainingJob.LIVE).update(
        status=TrainingJob.Status.INTERRUPTED,
        reason="The node stopped sending heartbeats; resumes from its checkpoint when the node is back.",
        pid=None,
        updated=now,
    )


def jobs_nudge_due(*, now, lookahead, send):
    """Tell each node's worker, with an eta of the slot start, about jobs starting within `lookahead`
    (its agent would find them within a second anyway; this makes the start land on time)."""
    due = TrainingJob.objects.filter(
        status__in=TrainingJob.WAITING,
        reservation__status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE],
        reservation__start__lte=now + lookahead,
        reservation__end__gt=now,
    ).select_related("reservation")
    count = 0
    for job in due:
        node, _ = job_placement(job)
        if node is not None and node.online:
            send(job, node.hostname, max(job.reservation.start, now))
            count += 1
    return count


def release_after_finish(*, reservation_id, job_id, now=None):
    """A job completed: its booking gives back the whole slots it will not use."""
    from reservations.services import reservation_release_early

    return reservation_release_early(
        reservation_id=reservation_id, reason=f"Job {job_id} finished before the booking's end.", now=now
    )


def reservations_release_unused(*, now):
    """Level-triggered twin of the agent's release on exit. A started booking with whole slots left
    gives them back when its job completed or, with NO_SHOW_RELEASE, when it has no job after its
    first slot (a no-show)."""
    from reservations.services import reservation_release_early

    started = Reservation.objects.filter(
        status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE],
        start__lte=now,
        end__gt=policy.ceil_to_slot(now),
    )
    released = sum(
        1
        for reservation_id, job_id in started.filter(job__status=TrainingJob.Status.COMPLETED).values_list("pk", "job__pk")
        if release_after_finish(reservation_id=reservation_id, job_id=job_id, now=now)
    )
    if settings.NO_SHOW_RELEASE:
        no_shows = started.filter(start__lte=now - policy.slot_length(), job__isnull=True).values_list("pk", flat=True)
        released += sum(
            1
            for reservation_id in no_shows
            if reservation_release_early(
                reservation_id=reservation_id, reason="No-show: nothing ran in the first slot.", now=now
            )
        )
    return released


def slot_end_notices(*, now, lead):
    """Once per booking with a running job: tell the owner its slot ends within `lead`."""
    from reservations.services import notice_send

    ending = Reservation.objects.filter(
        status=Reservation.Status.ACTIVE,
        preempted_by=None,  # warned of its preemption instead
        end__lte=now + lead,
        end__gt=now,
        job__status__in=[TrainingJob.Status.RUNNING, TrainingJob.Status.STARTING],
    ).exclude(notices__kind=Notice.Kind.SLOT_ENDING).select_related("user")
    sent = 0
    for reservation in ending:
        notice_send(
            user=reservation.user, kind=Notice.Kind.SLOT_ENDING, reservation=reservation,
            message=(
                f"Reservation #{reservation.pk} ends at {reservation.end:%H:%M} UTC; its job will be "
                "stopped then with a resumable checkpoint (it may overrun while nobody else needs the GPUs)."
            ),
        )
        sent += 1
    return sent
