"""Writes and reads for training jobs. The booking services create and stop jobs through the hooks
in trainer.hooks; the node agent and the central reconcile task call the rest."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reservations import jobs, policy
from reservations.errors import BookingError
from reservations.models import Allocation, Node, Notice, Reservation
from reservations.services import notice_send, reservation_release_early
from reservations.services.locks import lock_reservation, service_transaction
from reservations.utc_text import utc_moment

from . import queue, signals
from .models import TrainingJob
from .spec import PREVIOUS


def job_spec_check(*, user, team, spec, series=False):
    """Rules a serializer cannot check alone: what `resume_from` may name. "previous" only in a
    series (`series`): the job of the previous occurrence is found when this one starts."""
    source_id = spec.get("resume_from")
    if source_id is None:
        return spec
    if source_id == PREVIOUS:
        if not series:
            raise BookingError(
                "job", f'resume_from: "{PREVIOUS}" is for a recurring booking (a series): it resumes from the '
                "previous occurrence's job. Give a job id here."
            )
        return spec
    source = TrainingJob.objects.select_related("reservation").filter(pk=source_id).first()
    if source is None or (not user.is_staff and source.reservation.team_id != team.pk):
        # One answer for both: another team's job ids are not to be found out this way.
        raise BookingError("job", f"resume_from: no job {source_id} in team {team.slug}.")
    if not source.checkpoint:
        raise BookingError("job", f"resume_from: job {source_id} has no checkpoint to resume from.")
    return spec


def job_create(*, reservation, spec, now):
    """Inside the booking's transaction: the job waits (queued) for its slot. Returns warnings for
    the person booking: a job booked on a node that is offline is accepted (the node may be back by
    the slot's start), but they are told, in the response and in a notice."""
    job = TrainingJob.objects.create(
        reservation=reservation,
        spec=spec,
        epochs=spec["epochs"],
        resumed_from_id=_resumed_from(spec),
        reason="Booked; waits for the slot to start.",
        created=now,
    )
    node, _ = job_placement(job)
    if node is None or node.online:
        return []
    if reservation.series_id is not None and Notice.objects.filter(
        user=reservation.user, kind=Notice.Kind.NODE_OFFLINE, read_at=None,
        reservation__series_id=reservation.series_id, data__node=node.hostname,
    ).exists():
        # A series booking many occurrences on a node that is away: told once (unread), not per night.
        return []
    warning = (
        f"Node {node.hostname} is offline now (last heard from "
        + (utc_moment(node.last_heartbeat) if node.last_heartbeat else "never")
        + f"); job {job.pk} starts when the node is back within the booking."
    )
    notice_send(
        user=reservation.user, kind=Notice.Kind.NODE_OFFLINE, reservation=reservation, message=warning,
        # A booking that has begun ("now") is told here what the slot-start notice would say.
        data={"node": node.hostname, "job": job.pk, "at": "slot_start" if reservation.start <= now else "booking"},
    )
    return [warning]


def job_replace(*, reservation, spec, now):
    """A booking not begun carries `spec` from now on (None: no job): its waiting job takes the new
    spec, or is made or dropped. A job that has begun is left as it is."""
    job = TrainingJob.objects.filter(reservation=reservation).first()
    if job is None:
        if spec is not None:
            job_create(reservation=reservation, spec=spec, now=now)
        return
    if job.status != TrainingJob.Status.QUEUED:
        return
    if spec is None:
        job.delete()
        return
    TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.QUEUED).update(
        spec=spec, epochs=spec["epochs"], resumed_from_id=_resumed_from(spec), updated=now
    )


def _resumed_from(spec):
    """The job a spec resumes, by id; None for none, or for "previous" (found when it starts)."""
    source = spec.get("resume_from")
    return source if isinstance(source, int) else None


def job_stop_for_booking(*, reservation, reason):
    """The booking ends now (cancelled, preempted): a job still waiting ends with it; a live one is
    asked to stop with a checkpoint, and its node's worker hears at once (its agent would see it
    within a second anyway)."""
    job = TrainingJob.objects.filter(reservation=reservation).first()
    if job is None:
        return
    # The job row is not locked before these writes (jobs are last in the lock order, locks.py):
    # each is a compare-and-set on its status instead. A node agent may claim the job at this very
    # moment (waiting -> starting); then the first update changes nothing and the second asks the
    # job, live now, to stop. The agent also stops any job whose booking is no longer live.
    ended_waiting = TrainingJob.objects.filter(pk=job.pk, status__in=TrainingJob.WAITING).update(
        status=TrainingJob.Status.STOPPED, reason=reason, ended_at=timezone.now()
    )
    if not ended_waiting and job_request_stop(job_id=job.pk, reason=reason):
        node, _ = job_placement(job)
        if node is not None:
            job_id, hostname = job.pk, node.hostname
            transaction.on_commit(lambda: queue.send_stop(job_id, hostname, reason))


def job_placement(job):
    """(node, devices) for a job: the node of its GPUs and their CUDA indices ([] for CPU devices)."""
    gpus = [a.gpu for a in job.reservation.allocation_list]
    nodes = {g.node_id for g in gpus}
    if len(nodes) != 1:
        return None, None
    devices = [] if all(g.model == "cpu" for g in gpus) else [g.index for g in gpus]
    return gpus[0].node, devices


def _next_start_on_gpus(reservation):
    """When the next booking on any of `reservation`'s GPUs starts (None: none is booked)."""
    gpu_ids = [a.gpu_id for a in reservation.allocation_list]
    return (
        Allocation.objects.filter(gpu_id__in=gpu_ids, live=True, start__gte=reservation.end)
        .exclude(reservation_id=reservation.pk)
        .order_by("start")
        .values_list("start", flat=True)
        .first()
    )


def overrun_deadline(reservation):
    """When a job still running past its booking must stop (rule: policy.overrun_deadline)."""
    return policy.overrun_deadline(reservation.start, reservation.end, _next_start_on_gpus(reservation))


def stop_deadline(reservation, job):
    """When the agent stops a live job (rule: policy.stop_deadline)."""
    next_start = None if reservation.preempted_by_id is not None else _next_start_on_gpus(reservation)
    return policy.stop_deadline(reservation, job.spawned_at, next_start)


def job_ready_to_start(job):
    """A job that resumes another waits until that one has exited, so it resumes from its final
    checkpoint (a preempted job may still be saving when the rebooked one's slot begins)."""
    if job.resumed_from_id is None:
        return True
    return not TrainingJob.objects.filter(pk=job.resumed_from_id, status__in=TrainingJob.LIVE).exists()


def job_resolve_previous(*, job, now=None):
    """A job of a series' occurrence whose spec says "resume_from": "previous", due to start: find,
    once, what it resumes. The job of the latest earlier booking of the series (by booking start) that
    saved a checkpoint becomes its `resumed_from` and its spec's `resume_from`; none: it starts fresh
    from its spec's model (`resume_from` dropped). Recorded in its reason.

    Returns whether the job may go on to start: False while a job of an earlier booking of the series
    is live, as that one may still be saving the checkpoint to resume from (or be the one to save it).
    A job without "previous", or resolved already, goes on.

    Compare-and-set, as job_claim_start: only a waiting job still saying "previous" is written, so of
    two agents (a restarted worker beside the old one) one resolves it and the other reads the answer."""
    if job.spec.get("resume_from") != PREVIOUS:
        return True
    now = now or timezone.now()
    reservation = job.reservation
    if reservation.series_id is None:  # not an occurrence (the booking check refuses this): none earlier
        earlier = TrainingJob.objects.none()
    else:
        earlier = TrainingJob.objects.filter(
            reservation__series_id=reservation.series_id, reservation__start__lt=reservation.start
        ).exclude(pk=job.pk)
    live = earlier.filter(status__in=TrainingJob.LIVE).order_by("-reservation__start", "-pk").first()
    if live is not None:
        waits = f"Waits for job {live.pk} of an earlier occurrence of the series to end: it may still be saving."
        # Written once, not on every pass of the agent.
        TrainingJob.objects.filter(pk=job.pk, status__in=TrainingJob.WAITING).exclude(reason=waits).update(
            reason=waits, updated=now
        )
        return False
    source = (
        earlier.exclude(checkpoint="").select_related("reservation").order_by("-reservation__start", "-pk").first()
    )
    spec = {key: value for key, value in job.spec.items() if key != "resume_from"}
    if source is None:
        reason = "No earlier occurrence left a checkpoint: starts fresh."
    else:
        spec["resume_from"] = source.pk
        occurrence = source.reservation.occurrence or source.reservation.start
        reason = f"Resumes from job {source.pk} of the series' occurrence at {utc_moment(occurrence)}"
        if source_finished(source):
            reason += ", which finished training: fine-tunes its final weights"
        reason += "."
    resolved = TrainingJob.objects.filter(
        pk=job.pk, status__in=TrainingJob.WAITING, spec__resume_from=PREVIOUS
    ).update(spec=spec, resumed_from=source, reason=reason, updated=now)
    if resolved:
        job.spec, job.resumed_from, job.reason = spec, source, reason
    else:
        job.refresh_from_db(fields=["spec", "resumed_from", "reason", "status"])
    return job.spec.get("resume_from") != PREVIOUS


def resume_source(job):
    """The job whose checkpoint `job` starts from: itself (it was interrupted), else the newest one
    along the jobs it resumes (one that stopped before its first checkpoint passes on its source's).
    None: it starts from its spec's model."""
    seen = set()
    while job is not None and job.pk not in seen:
        if job.checkpoint:
            return job
        seen.add(job.pk)
        job = job.resumed_from
    return None


def source_finished(source):
    """Whether a checkpoint's job trained to its end (all its epochs, or it completed: early
    stopping): ultralytics cannot resume such a run ("nothing to resume"); a job starting from it
    fine-tunes its weights instead (trainer.runner)."""
    return source.status == TrainingJob.Status.COMPLETED or (source.checkpoint_epoch or 0) >= source.epochs


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
    """The child is gone. If it did not record an end itself, record one now.

    Read, then update: the child wrote its own end (if any) before it exited, so it is committed and
    read here; the update still excludes finished jobs, so an end the child recorded always wins
    over the one guessed here from the exit."""
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
    signals.nodes_lost.send(sender=Node, node_ids=lost, now=now)
    return TrainingJob.objects.filter(node_id__in=lost, status__in=TrainingJob.LIVE).update(
        status=TrainingJob.Status.INTERRUPTED,
        reason="The node stopped sending heartbeats; resumes from its checkpoint when the node is back.",
        pid=None,
        # The run ended here as far as usage counts (the report and /metrics read ended_at); a
        # resumed run records its own start and clears it (runner._record_start).
        ended_at=now,
        updated=now,
    )


def jobs_nudge_due(*, now, lookahead):
    """Tell each node's worker, with an eta of the slot start, about jobs starting within `lookahead`
    (its agent would find them within a second anyway; this makes the start land on time)."""
    due = TrainingJob.objects.filter(
        status__in=TrainingJob.WAITING,
        reservation__status__in=policy.LIVE_STATUSES,
        reservation__start__lte=now + lookahead,
        reservation__end__gt=now,
    ).select_related("reservation")
    count = 0
    for job in due:
        node, _ = job_placement(job)
        if node is not None and node.online:
            queue.send_start(job.pk, node.hostname, max(job.reservation.start, now))
            count += 1
    return count


def release_after_finish(*, reservation_id, job_id, now=None):
    """A job completed: its booking gives back the whole slots it will not use."""
    return reservation_release_early(
        reservation_id=reservation_id, reason=f"Job {job_id} finished before the booking's end.", now=now
    )


def reservations_release_unused(*, now):
    """Level-triggered twin of the agent's release on exit. A started booking with whole slots left
    gives them back when its job completed or, with NO_SHOW_RELEASE, when it has no job after its
    first slot (a no-show: no work at all, neither a job nor models to serve; rules:
    policy.released_end, policy.no_show_cutoff)."""
    started = Reservation.objects.filter(
        status__in=policy.LIVE_STATUSES,
        start__lte=now,
        end__gt=policy.ceil_to_slot(now),  # cheap: only bookings with a whole slot still ahead
    )
    released = sum(
        1
        for reservation_id, job_id in started.filter(job__status=TrainingJob.Status.COMPLETED).values_list("pk", "job__pk")
        if release_after_finish(reservation_id=reservation_id, job_id=job_id, now=now)
    )
    if settings.NO_SHOW_RELEASE:
        no_shows = started.filter(jobs.work_kinds.without_work(), start__lte=policy.no_show_cutoff(now)).values_list(
            "pk", flat=True
        )
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
    ending = Reservation.objects.filter(
        status=Reservation.Status.ACTIVE,
        preempted_by=None,  # warned of its preemption instead
        end__lte=now + lead,
        end__gt=now,
        job__status__in=[TrainingJob.Status.RUNNING, TrainingJob.Status.STARTING],
    ).exclude(notices__kind=Notice.Kind.SLOT_ENDING).select_related("user")
    sent = 0
    for reservation in ending:
        sent += _notice_once(
            reservation, Notice.Kind.SLOT_ENDING, match={},
            message=(
                f"Reservation #{reservation.pk} ends at {utc_moment(reservation.end)}; its job will be "
                "stopped then with a resumable checkpoint (it may overrun while nobody else needs the GPUs)."
            ),
        )
    return sent


def _notice_once(reservation, kind, *, match, message, data=None):
    """Send the booking's owner a notice of `kind` unless one whose data has `match` is on record; 1 if
    sent.

    The queries above exclude bookings already told, but two reconcile passes at once (a second
    beat, or a slow pass overlapping the next) both read "not told yet" and both sent. The check and
    the send are one step under the booking's row lock (1st in locks.py's order), so the second pass
    waits, then sees the first one's notice."""
    with service_transaction():
        if lock_reservation(reservation.pk) is None or Notice.objects.filter(
            reservation=reservation, kind=kind, **{f"data__{key}": value for key, value in match.items()}
        ).exists():
            return 0
        notice_send(user=reservation.user, kind=kind, reservation=reservation, message=message, data=data)
    return 1


def node_away_notices(*, now):
    """Once per booking: its slot has begun, its job waits, and its node is still offline. Tell the
    owner, who may cancel and book elsewhere."""
    waiting = (
        TrainingJob.objects.filter(
            policy.job_window_open_filter(now, prefix="reservation__"), status=TrainingJob.Status.QUEUED
        )
        .exclude(reservation__notices__kind=Notice.Kind.NODE_OFFLINE, reservation__notices__data__at="slot_start")
        .select_related("reservation__user", "reservation__team")
    )
    sent = 0
    for job in waiting:
        node, _ = job_placement(job)
        if node is None or node.online:
            continue
        reservation = job.reservation
        sent += _notice_once(
            reservation, Notice.Kind.NODE_OFFLINE, match={"at": "slot_start"},
            data={"node": node.hostname, "job": job.pk, "at": "slot_start"},
            message=(
                f"Reservation #{reservation.pk} has begun, but node {node.hostname} is still offline: job "
                f"{job.pk} has not started. It starts if the node comes back before "
                f"{utc_moment(reservation.end)}; or cancel it and book other GPUs."
            ),
        )
    return sent
