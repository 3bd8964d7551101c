"""The writes every booking flow shares, inside a service's transaction: checking and picking GPUs,
writing a reservation with its allocations, job and audit entry, and cancelling a locked one."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError
from django.utils import timezone

from .. import jobs, selectors
from ..errors import BookingError
from ..models import GPU, Allocation, AuditEntry, Reservation
from .audit import audit_change, audit_record, snapshot
from .locks import is_overlap_violation, lock_healthy_gpus, service_transaction
from .quota import WITHIN

Status = Reservation.Status


def check_gpu_ids(gpu_ids):
    """Shape checks that need no database: non-empty, no duplicates. Returns them sorted."""
    if not gpu_ids:
        raise BookingError("gpus", "Name at least one GPU.")
    duplicates = sorted({g for g in gpu_ids if gpu_ids.count(g) > 1})
    if duplicates:
        raise BookingError("gpus", f"GPU ids appear more than once: {duplicates}.")
    return sorted(gpu_ids)


def bookable_gpus(gpu_ids, *, lock):
    """The GPUs, each checked to exist and be healthy, with their nodes loaded. With `lock`, the
    rows are locked in id order (locks.py) by the same statement."""
    queryset = GPU.objects.select_related("node").filter(id__in=gpu_ids).order_by("id")
    gpus = list(queryset.select_for_update(of=("self",)) if lock else queryset)
    unknown = sorted(set(gpu_ids) - {g.id for g in gpus})
    if unknown:
        raise BookingError("gpus", f"No such GPU: {unknown}.")
    unhealthy = sorted(g.name for g in gpus if not g.healthy)
    if unhealthy:
        raise BookingError("gpus", f"Not healthy, cannot be booked: {', '.join(unhealthy)}.")
    return gpus


def check_gpu_count(gpu_count, allow_multi_node):
    """A request for `gpu_count` GPUs must fit the healthy cluster (on one node, unless allowed)."""
    if gpu_count < 1:
        raise BookingError("gpu_count", "Ask for at least one GPU.")
    healthy = GPU.objects.filter(healthy=True)
    if allow_multi_node:
        available = healthy.count()
    else:
        per_node = {}
        for node_id in healthy.values_list("node_id", flat=True):
            per_node[node_id] = per_node.get(node_id, 0) + 1
        available = max(per_node.values(), default=0)
    if gpu_count > available:
        where = "in the cluster" if allow_multi_node else "on any one node (see allow_multi_node)"
        raise BookingError("gpu_count", f"Only {available} healthy GPUs {where}; asked for {gpu_count}.")


def pick_free_gpus(*, start, end, gpu_count, allow_multi_node):
    """Lock every healthy GPU (id order) and pick `gpu_count` free ones for [start, end), or None.
    Locking the whole candidate set serialises such picks; it is what makes the pick safe."""
    lock_healthy_gpus()
    return selectors.pick_gpus(start=start, end=end, gpu_count=gpu_count, allow_multi_node=allow_multi_node)


def write_allocations(reservation, gpus, *, live=True):
    """One allocation per GPU (GPU objects or ids) over the reservation's window, kept on it."""
    reservation.held_allocations = Allocation.objects.bulk_create(
        Allocation(
            reservation=reservation,
            **({"gpu": g} if isinstance(g, GPU) else {"gpu_id": g}),
            start=reservation.start,
            end=reservation.end,
            live=live,
        )
        for g in gpus
    )


def write_reservation(fields, start, end, gpus, *, confirmed, work, actor, now, action=None, reason=""):
    """A reservation, its allocations (live when confirmed), its work (a job, models to serve) and its
    audit entry. The work's warnings for the person booking (its node is offline, ...) are left on `reservation.warnings`.
    Confirmed borrowed time (fields["borrowed"]) is always preemptible and audited as `borrow`."""
    status = Status.CONFIRMED if confirmed else Status.WAITLISTED
    if confirmed and fields.get("borrowed"):
        fields = {**fields, "preemptible": True}
        action = action or AuditEntry.Action.BORROW
    reservation = Reservation.objects.create(start=start, end=end, status=status, **fields)
    write_allocations(reservation, gpus, live=confirmed)
    reservation.warnings = jobs.work_kinds.create(reservation=reservation, work=work, now=now)
    audit_record(
        action=action or (AuditEntry.Action.CREATE if confirmed else AuditEntry.Action.WAITLIST),
        actor=actor,
        reservation=reservation,
        reason=reason,
        after=snapshot(reservation),
    )
    return reservation


def cancel_locked(reservation, *, action, actor, reason, job_reason, before=None, **changes):
    """On a locked reservation: cancel it (with `changes` to other fields), free its GPU time, stop
    its job, and audit it. Returns the state before."""
    before = before or snapshot(reservation)
    # What it held counts against its team's quota up to now (policy.counted_end); a waiting request held nothing.
    changes.setdefault("cancelled_at", timezone.now() if reservation.status != Status.WAITLISTED else None)
    reservation.status = Status.CANCELLED
    for field, value in changes.items():
        setattr(reservation, field, value)
    reservation.save(update_fields=["status", *changes, "updated"])
    reservation.allocations.update(live=False)
    audit_change(action=action, actor=actor, reservation=reservation, reason=reason, before=before)
    jobs.work_kinds.stop(reservation=reservation, reason=job_reason)
    return before


@dataclass(frozen=True)
class Booking:
    """A booking request whose window is decided: what it writes, and who asked."""

    fields: dict  # Reservation fields: user, team, title, priority, preemptible, gpu_count, ...
    start: datetime
    end: datetime
    work: dict | None  # {"job": spec} or {"serve": spec}, checked (reservations.jobs)
    actor: object
    now: datetime
    # Called with the new reservation inside the booking's transaction (the API's idempotency record).
    on_booked: Callable | None = None
    # Book over the team's quota as borrowed time rather than be refused (services.quota).
    borrow: bool = False

    def write(self, gpus, *, confirmed=True, reason="", quota=WITHIN):
        """Write it: confirmed on `gpus` as `quota` (a QuotaDecision) says, or waitlisted (its
        `borrowed` then keeps the wish to borrow)."""
        fields = {**self.fields, "borrowed": quota.borrowed if confirmed else self.borrow}
        reason = " ".join(part for part in (reason, quota.audit_reason) if part)
        reservation = write_reservation(
            fields, self.start, self.end, gpus, confirmed=confirmed, work=self.work, actor=self.actor,
            now=self.now, reason=reason,
        )
        if self.on_booked is not None:
            self.on_booked(reservation)
        return reservation


@dataclass(frozen=True)
class Refusal:
    """Why a booking may not take the GPUs in its way; `earliest` when only notice was lacking."""

    reason: str
    gpu_ids: tuple = ()
    earliest: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    """What one booking transaction decided: booked, or not and why."""

    reservation: Reservation | None = None
    # What was in the way, when it was read (None: read it again to show it).
    conflicts: list | None = None
    # Why the bookings in the way may not be preempted (None: nothing this booking could take).
    refusal: Refusal | None = None
    # The bookings in the way changed between reading them and locking them: worth another try.
    raced: bool = False
    # It would be borrowed time, which takes only idle GPUs: no preemption to try.
    borrowed: bool = False


def attempt(write, **kwargs):
    """One booking transaction, `write` returning its Attempt. An overlap caught by the exclusion
    constraint (a race the locks did not cover) reads as a race lost."""
    try:
        with service_transaction():
            return write(**kwargs)
    except IntegrityError as exc:
        if not is_overlap_violation(exc):
            raise
        return Attempt(raced=True)
