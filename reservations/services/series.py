"""Recurring bookings: a Series made with the occurrences the booking horizon holds, the later ones
booked by beat as the horizon moves (series_extend), and changes to a series: cancel one occurrence,
this and the following, or all; change what future occurrences carry; transfer it in the team.

Every occurrence is an ordinary booking made by reservation_create (same rules, quotas, preemption,
audit), with `series` and `occurrence` set. The database holds one booking per occurrence (the
constraint reservation_one_per_occurrence), so two beats, a retry or a restart never book one twice.
A series' own row is locked alone, in a short transaction of its own (locks.py), for its bookkeeping
(how far it is booked, what was skipped); bookings are never made while it is held.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .. import jobs, policy, recurrence, selectors
from ..errors import BookingConflict, BookingError, QuotaExceeded, SeriesConflict
from ..models import GOING, AuditEntry, Notice, Reservation, Series
from ..utc_text import utc_moment
from .audit import audit_record
from .booking import reservation_create
from .changes import reservation_cancel, reservation_transfer, reservation_update
from .locks import is_occurrence_violation, lock_reservation, service_transaction
from .notices import notice_send
from .records import check_gpu_count, check_gpu_ids

log = logging.getLogger(__name__)

Status = Reservation.Status


@dataclass(frozen=True)
class Occurrence:
    """What became of one occurrence: booked (confirmed), waitlisted, skipped (with why), later
    (beyond the horizon: beat books it) or cancelled."""

    start: datetime
    outcome: str
    reservation: Reservation | None = None
    reason: str = ""
    new: bool = True  # False: it was booked already (by another beat, or before a retry)


@dataclass
class SeriesResult:
    series: Series
    occurrences: list = field(default_factory=list)

    def of(self, outcome):
        return [o for o in self.occurrences if o.outcome == outcome]


def series_snapshot(series):
    """The audited state of a series, JSON-ready."""
    return {
        "user": series.user.get_username(),
        "team": series.team.slug,
        "title": series.title,
        "rule": series.rule,
        "start": series.first_start.isoformat(),
        "timezone": series.time_zone,
        "slots": series.slots,
        "gpus": series.gpu_ids,
        "gpu_count": series.gpu_count,
        "priority": series.priority,
        "preemptible": series.preemptible,
        "borrow": series.borrow,
        "on_conflict": series.on_conflict,
        "work": series.work,
        "ends_before": series.ends_before.isoformat() if series.ends_before else None,
        "cancelled": series.cancelled_at is not None,
    }


def _target(series):
    return f"series:{series.pk}"


def series_create(
    *, user, start, slots, rule, tz="UTC", on_conflict=Series.OnConflict.FAIL, gpu_ids=None, gpu_count=None,
    allow_multi_node=False, priority=Reservation.Priority.NORMAL, preemptible=None, team=None, title="",
    work=None, auto_rebook=True, borrow=False, actor=None, now=None, on_created=None,
):
    """Make a series and book its occurrences within the horizon (the rest: series_extend). Each
    booking is its own transaction (never call this inside another one). With on_conflict `fail`
    nothing is booked when an occurrence cannot be (SeriesConflict); `skip` books the others and
    notifies the owner; `waitlist` puts the taken ones on the waitlist. `on_created(series)` runs in
    the series' own transaction (the API's idempotency record). Returns a SeriesResult."""
    now = now or timezone.now()
    actor = actor or user
    policy.require_one_target(gpu_ids, gpu_count)
    team = policy.resolve_team(user, team)
    if on_conflict not in Series.OnConflict.values:
        raise BookingError("on_conflict", f"Use one of {', '.join(Series.OnConflict.values)}.")
    policy.validate_slots(slots)
    if borrow:
        policy.may_borrow(priority)
    policy.resolve_preemptible(user, priority, preemptible)  # a 400 for high priority without the right
    if gpu_ids is not None:
        gpu_ids = check_gpu_ids(list(gpu_ids))
    else:
        check_gpu_count(gpu_count, allow_multi_node)
    parsed = recurrence.parse_rule(rule)
    zone = recurrence.zone(tz)
    recurrence.first_start_check(start, slots, now)
    starts = recurrence.expand(parsed, start, zone)
    policy.require_occurrences_apart(starts, slots)
    work = jobs.work_kinds.check(user=user, team=team, work=work, series=True)
    series = Series(
        user=user, team=team, title=title, gpu_ids=gpu_ids, gpu_count=len(gpu_ids) if gpu_ids is not None else gpu_count,
        allow_multi_node=allow_multi_node, slots=slots, priority=priority, preemptible=preemptible,
        auto_rebook=auto_rebook, borrow=borrow, work=work or {}, rule=parsed.text, first_start=start,
        time_zone=tz, last_start=starts[-1], on_conflict=on_conflict, created=now,
    )
    due = [s for s in starts if policy.occurrence_in_horizon(s, slots, now)]
    if on_conflict == Series.OnConflict.FAIL:
        _require_all_free(series, due, now, staff=actor.is_staff)
    with transaction.atomic():
        series.save()
        audit_record(
            action=AuditEntry.Action.SERIES_CREATE, actor=actor, target=_target(series),
            reason=recurrence.describe(parsed, start, zone, tz), after=series_snapshot(series),
        )
        if on_created is not None:
            on_created(series)
    result = SeriesResult(series)
    try:
        result.occurrences = _book_due(series, due, now=now, actor=actor, strict=on_conflict == Series.OnConflict.FAIL)
    except (BookingConflict, QuotaExceeded, BookingError):
        # `fail`, and an occurrence was taken between the check and its booking: undo the rest.
        _undo(series, actor=actor, now=now)
        raise
    result.occurrences += [Occurrence(s, "later") for s in starts if s not in due]
    _notify_skipped(series, result.of("skipped"))
    return result


def _require_all_free(series, due, now, *, staff):
    """`fail`: every occurrence within the horizon can be booked, or SeriesConflict with each that
    cannot. Staff pass a quota (services.quota) when they book: not a reason to refuse theirs."""
    previews = selectors.occurrences_preview(
        team=series.team, priority=series.priority, starts=due, slots=series.slots, now=now,
        gpu_ids=series.gpu_ids, gpu_count=None if series.gpu_ids is not None else series.gpu_count,
        allow_multi_node=series.allow_multi_node, borrow=series.borrow,
    )
    blocked = [p for p in previews if not p.bookable and not (staff and p.state == "over_quota")]
    if not blocked:
        return
    suggestions = {
        p.start: selectors.booking_suggestions(
            now=now, start=p.start, slots=series.slots, gpu_ids=series.gpu_ids,
            gpu_count=None if series.gpu_ids is not None else series.gpu_count,
            allow_multi_node=series.allow_multi_node, limit=3,
        )
        for p in blocked if p.state == "taken"
    }
    raise SeriesConflict(
        f"{len(blocked)} of {len(due)} occurrences within the booking horizon cannot be booked; nothing was "
        "booked. Book with on_conflict skip or waitlist to take the free ones.",
        occurrences=blocked, suggestions=suggestions,
    )


def _book_due(series, starts, *, now, actor, strict):
    """Book each occurrence in `starts` (in order) not booked yet, then mark the series booked through
    the last. `strict`: a refusal is raised (fail); otherwise it is recorded as skipped."""
    outcomes = []
    for start in starts:
        outcomes.append(_book_one(series, start, now=now, actor=actor, strict=strict))
    if starts:
        _mark_through(series, starts[-1], [o for o in outcomes if o.outcome == "skipped"])
    return outcomes


def _book_one(series, start, *, now, actor, strict):
    existing = _booked(series, start)
    if existing is not None:
        return _already(start, existing)
    try:
        reservation = reservation_create(
            on_booked=lambda booked: _require_going(series.pk, start),
            user=series.user, team=series.team.slug, start=start, slots=series.slots, gpu_ids=series.gpu_ids,
            gpu_count=None if series.gpu_ids is not None else series.gpu_count,
            allow_multi_node=series.allow_multi_node, priority=series.priority, preemptible=series.preemptible,
            title=series.title, waitlist=series.on_conflict == Series.OnConflict.WAITLIST, work=series.work or None,
            auto_rebook=series.auto_rebook, borrow=series.borrow, actor=actor, now=now, series=series,
            occurrence=start,
        )
    except NotGoing:
        return Occurrence(start, "cancelled")
    except (BookingConflict, QuotaExceeded, BookingError, PermissionDenied) as refusal:
        if strict:
            raise
        # What was in the way may be this very occurrence, booked by another beat since we looked.
        existing = _booked(series, start)
        if existing is not None:
            return _already(start, existing)
        # The owner may have lost a right the series needs (high priority): skipped, and told.
        return Occurrence(start, "skipped", reason=getattr(refusal, "message", None) or str(refusal))
    except IntegrityError as exc:
        if not is_occurrence_violation(exc):
            raise
        # Booked by another beat (or a retry) since we looked: it is booked, once.
        return _already(start, _booked(series, start))
    return Occurrence(start, "waitlisted" if reservation.status == Status.WAITLISTED else "booked", reservation)


class NotGoing(Exception):
    """The occurrence was cancelled (or its series) while it was being booked: the booking is undone."""


def _require_going(series_id, start):
    """Inside an occurrence's booking transaction: lock its series (last in the order, locks.py) and
    check the occurrence is still to be booked, so a cancel that committed since beat read the series
    is never undone by beat's booking (NotGoing rolls the booking back)."""
    series = Series.objects.select_for_update().filter(pk=series_id).first()
    if series is None or not policy.occurrence_going(series, start):
        raise NotGoing()


def _already(start, reservation):
    outcome = "waitlisted" if reservation.status == Status.WAITLISTED else "booked"
    return Occurrence(start, outcome, reservation, new=False)


def _booked(series, start):
    return Reservation.objects.filter(series=series, occurrence=start, rebook_of=None).first()


def _mark_through(series, last, skipped):
    """Bookkeeping under the series' lock: booked through `last` (never backwards), and the skipped
    occurrences recorded once each."""
    with service_transaction():
        locked = Series.objects.select_for_update().get(pk=series.pk)
        if locked.booked_through is None or locked.booked_through < last:
            locked.booked_through = last
        known = {s["at"] for s in locked.skipped}
        fresh = [o for o in skipped if o.start.isoformat() not in known]
        locked.skipped = locked.skipped + [{"at": o.start.isoformat(), "reason": o.reason} for o in fresh]
        locked.save(update_fields=["booked_through", "skipped", "updated"])
    series.booked_through, series.skipped = locked.booked_through, locked.skipped
    return fresh


def _notify_skipped(series, skipped):
    if not skipped:
        return
    lines = "; ".join(f"{utc_moment(o.start)}: {o.reason}" for o in skipped)
    notice_send(
        user=series.user, kind=Notice.Kind.SERIES_SKIPPED,
        message=f"{len(skipped)} occurrence(s) of series #{series.pk} {series.title!r} could not be booked: {lines}",
        data={"series": series.pk, "skipped": [{"start": o.start, "reason": o.reason} for o in skipped]},
    )


def _undo(series, *, actor, now):
    """`fail` lost a race after booking some occurrences: cancel them, and the series."""
    with transaction.atomic():
        Series.objects.filter(pk=series.pk).update(cancelled_at=now)
        series.cancelled_at = now
        audit_record(
            action=AuditEntry.Action.SERIES_CANCEL, actor=actor, target=_target(series),
            reason="An occurrence was taken while the series was being booked (on_conflict: fail): nothing is kept.",
            after=series_snapshot(series),
        )
    for reservation in Reservation.objects.filter(series=series, status__in=Reservation.OPEN_STATUSES):
        reservation_cancel(reservation_id=reservation.pk, actor=series.user, reason="The series could not be booked whole.")


def series_extend(*, now=None):
    """Beat: book every going series' occurrences that came within the booking horizon. Safe to run
    twice at once (the constraint books each occurrence once; skips are recorded and notified once).
    Reads only the series with occurrences still to book (models.GOING). Returns how many
    occurrences were booked or waitlisted."""
    now = now or timezone.now()
    horizon = policy.horizon_end(now)
    done = 0
    going = Series.objects.filter(GOING).filter(Q(booked_through=None) | Q(booked_through__lt=horizon))
    for series in going.select_related("user", "team").order_by("id"):
        try:
            done += _extend(series, now)
        except Exception:  # one broken series must not stop the others' bookings
            log.exception("series %s: booking its next occurrences failed", series.pk)
    return done


def _extend(series, now):
    """Book the series' occurrences after booked_through that the horizon now holds; cancelled ones
    are passed over (so booked_through reaches the last start, and beat is done with the series)."""
    reached = [
        s for s in recurrence.stored_starts(series)
        if (series.booked_through is None or s > series.booked_through) and policy.occurrence_in_horizon(s, series.slots, now)
    ]
    if not reached:
        return 0
    outcomes = []
    for start in reached:
        if not policy.occurrence_going(series, start):
            continue
        refusal = policy.beat_refusal(series, start, now)
        if refusal is not None:
            outcomes.append(Occurrence(start, "skipped", reason=refusal))
        else:
            outcomes.append(_book_one(series, start, now=now, actor=None, strict=False))
    fresh = _mark_through(series, reached[-1], [o for o in outcomes if o.outcome == "skipped"])
    _notify_skipped(series, fresh)
    return sum(o.new and o.outcome in ("booked", "waitlisted") for o in outcomes)


# --- Changes ---------------------------------------------------------------------------------------


def _lock_series(series_id, actor, reason):
    series = Series.objects.select_for_update(of=("self",)).select_related("user", "team").filter(pk=series_id).first()
    if series is None:
        raise Series.DoesNotExist(f"No series {series_id}.")
    if not policy.can_manage(actor, series):
        raise PermissionDenied("Only the owner, a team admin or staff may change this series.")
    if series.cancelled_at is not None:
        raise BookingError("non_field_errors", "The series is cancelled; it can no longer be changed.")
    if actor.pk != series.user_id and not reason.strip():
        raise BookingError("reason", "Say why when you change someone else's series.")
    return series


SCOPES = ("one", "following", "all")


def series_cancel(*, series_id, actor, scope, occurrence=None, reason="", now=None):
    """Cancel one occurrence, this one and the following (`occurrence`: its start, UTC), or the whole
    series. Booked occurrences are cancelled as any booking is (each its own audit entry; a running
    one's job stops with a checkpoint); ones not booked yet are never booked. Returns the cancelled
    bookings."""
    now = now or timezone.now()
    if scope not in SCOPES:
        raise BookingError("scope", f"Use one of {', '.join(SCOPES)}.")
    if scope != "all" and occurrence is None:
        raise BookingError("occurrence", "Name the occurrence (its start) to cancel.")
    with service_transaction():
        series = _lock_series(series_id, actor, reason)
        before = series_snapshot(series)
        if scope != "all":
            occurrence = _an_occurrence(series, occurrence)
        if scope == "one":
            series.cancelled_occurrences = series.cancelled_occurrences + [occurrence.isoformat()]
            doomed = Reservation.objects.filter(series=series, occurrence=occurrence)
            what = f"occurrence {utc_moment(occurrence)}"
        elif scope == "following":
            series.ends_before = occurrence if series.ends_before is None else min(series.ends_before, occurrence)
            doomed = Reservation.objects.filter(series=series, occurrence__gte=occurrence)
            what = f"occurrences from {utc_moment(occurrence)} on"
        else:
            series.cancelled_at = now
            doomed = Reservation.objects.filter(series=series)
            what = "the whole series"
        series.save()
        audit_record(
            action=AuditEntry.Action.SERIES_CANCEL, actor=actor, target=_target(series),
            reason=f"{what}" + (f": {reason}" if reason else ""), before=before, after=series_snapshot(series),
        )
        doomed_ids = list(doomed.filter(status__in=Reservation.OPEN_STATUSES).values_list("id", flat=True))
    cancelled = [
        _each(reservation_cancel, reservation_id=reservation_id, actor=actor,
              reason=reason or f"Series #{series.pk}: {what} cancelled.")
        for reservation_id in doomed_ids
    ]
    return [r for r in cancelled if r is not None]


def _an_occurrence(series, occurrence):
    policy.require_aware("occurrence", occurrence)
    # In UTC, as every start of the series is: cancelled_occurrences holds its ISO text, which a
    # start given with another offset (a form's local time) would never match again.
    occurrence = occurrence.astimezone(dt_timezone.utc)
    if occurrence not in recurrence.stored_starts(series):
        raise BookingError("occurrence", f"The series has no occurrence starting at {utc_moment(occurrence)}.")
    if not policy.occurrence_going(series, occurrence):
        raise BookingError("occurrence", f"The occurrence at {utc_moment(occurrence)} is already cancelled.")
    return occurrence


CHANGEABLE = ("title", "priority", "preemptible", "work")


def series_change(*, series_id, actor, reason="", now=None, **changes):
    """Change what the series' future occurrences carry: title, priority, preemptible, work (the job
    template). The series and each occurrence not begun yet are changed (each booking with its own
    audit entry); ones running or past stay as they were. Returns the series."""
    now = now or timezone.now()
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise BookingError(unknown[0], "Not a field a series change takes.")
    with service_transaction():
        series = _lock_series(series_id, actor, reason)
        before = series_snapshot(series)
        if "work" in changes:
            changes["work"] = jobs.work_kinds.check(user=series.user, team=series.team, work=changes["work"], series=True) or {}
        if "priority" in changes or "preemptible" in changes:
            priority = changes.get("priority", series.priority)
            preemptible = changes.get("preemptible", series.preemptible)
            # Whoever asks, and the owner, whose right beat books its occurrences with.
            policy.resolve_preemptible(actor, priority, preemptible)
            changes["preemptible"] = preemptible
            if series.borrow:
                policy.may_borrow(priority)
            # Each coming booking gets what a new one of the series would: the priority's default
            # unless the series names preemptible.
            occurrence_preemptible = policy.resolve_preemptible(series.user, priority, preemptible)
        for name, value in changes.items():
            setattr(series, name, value)
        series.save()
        audit_record(
            action=AuditEntry.Action.SERIES_CHANGE, actor=actor, target=_target(series), reason=reason,
            before=before, after=series_snapshot(series),
        )
        future = list(_future(series, now).values_list("id", flat=True))
    booking_changes = {k: v for k, v in changes.items() if k in ("title", "priority")}
    if "priority" in changes or "preemptible" in changes:
        booking_changes["preemptible"] = occurrence_preemptible
    for reservation_id in future:
        if booking_changes:
            _each(reservation_update, reservation_id=reservation_id, actor=actor,
                  reason=reason or f"Series #{series.pk} changed.", **booking_changes)
        if "work" in changes:
            _replace_work(reservation_id, series, actor=actor, reason=reason, now=now)
    return series


def _each(change, **kwargs):
    """A series' change to one of its bookings: one that has ended, or that its series' owner no
    longer holds (transferred on its own to someone the actor may not change), since the list was
    read is left as it is, and the rest go on. Returns the booking, or None."""
    try:
        return change(**kwargs)
    except (BookingError, PermissionDenied, Reservation.DoesNotExist) as refused:
        log.info("series change left booking #%s as it is: %s", kwargs.get("reservation_id"), refused)
        return None


def _future(series, now):
    """The series' bookings that have not begun: what a change reaches."""
    return Reservation.objects.filter(
        series=series, start__gt=now, status__in=(Status.CONFIRMED, Status.WAITLISTED)
    ).order_by("start")


def _replace_work(reservation_id, series, *, actor, reason, now):
    """An occurrence not begun takes the series' new work (its waiting job's spec replaced)."""
    with service_transaction():
        reservation = lock_reservation(reservation_id)
        if reservation is None or reservation.start <= now or reservation.status not in (Status.CONFIRMED, Status.WAITLISTED):
            return
        before = jobs.work_kinds.state(reservation)
        jobs.work_kinds.replace(reservation=reservation, work=series.work, now=now)
        audit_record(
            action=AuditEntry.Action.UPDATE, actor=actor, reservation=reservation,
            reason=reason or f"Series #{series.pk}: the work its occurrences carry changed.",
            before={"work": {before.field: before.spec} if before else None}, after={"work": series.work or None},
        )


def series_transfer(*, series_id, actor, to, reason="", now=None):
    """Pass the series (and its occurrences not begun) to another member of its team."""
    now = now or timezone.now()
    target = get_user_model().objects.filter(username=to, is_active=True).first()
    if target is None:
        raise BookingError("to", f"No active user named {to!r}.")
    with service_transaction():
        series = _lock_series(series_id, actor, reason)
        if target.pk == series.user_id:
            raise BookingError("to", f"{to} already owns this series.")
        refusal = policy.transfer_refusal(actor, series, target)
        if refusal:
            raise BookingError("to", refusal.replace("the booking is", "the series is"))
        if series.priority == Reservation.Priority.HIGH and not target.has_perm("reservations.book_high_priority"):
            # Beat books the coming occurrences as their owner: one who may not book high could not.
            raise BookingError("to", f"{to} may not book high priority, which the series' occurrences are.")
        before = series_snapshot(series)
        series.user = target
        series.save()
        audit_record(
            action=AuditEntry.Action.SERIES_CHANGE, actor=actor, target=_target(series),
            reason=f"transferred to {to}" + (f": {reason}" if reason else ""), before=before, after=series_snapshot(series),
        )
        future = list(_future(series, now).exclude(user=target).values_list("id", flat=True))
    for reservation_id in future:
        _each(reservation_transfer, reservation_id=reservation_id, actor=actor, to=to,
              reason=reason or f"Series #{series.pk} transferred.")
    return series
