"""What the pages and the API show: the calendar, a person's bookings, a booking's page, notices, the
status board, calendar feeds. Each read is bounded by its window or its page."""

from collections import defaultdict

from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from .. import jobs, policy
from ..models import GPU, Allocation, AuditEntry, Notice, Reservation, Team
from .availability import overlapping_allocations
from .quotas import waitlist_order


def reservation_queryset():
    """Reservations with everything their JSON shows, their work included, in a fixed number of
    queries."""
    return Reservation.objects.select_related("user", "team", *jobs.work_kinds.related_names).prefetch_related(
        Prefetch(
            "allocations",
            queryset=Allocation.objects.select_related("gpu__node").order_by("gpu_id"),
            to_attr="held_allocations",
        ),
        *jobs.work_kinds.prefetches(),
    )


def gpu_status(*, now, upcoming_limit=3):
    """Per GPU: the reservation holding it now and the next few, for the status board."""
    gpus = list(GPU.objects.select_related("node").order_by("node__hostname", "index"))
    allocations = (
        Allocation.objects.filter(
            live=True,
            end__gt=now,
            reservation__status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE],
        )
        .order_by("start")
        .values_list("gpu_id", "reservation_id", "start")
    )
    current, upcoming = {}, defaultdict(list)
    for gpu_id, reservation_id, start in allocations:
        if start <= now:
            current[gpu_id] = reservation_id
        elif len(upcoming[gpu_id]) < upcoming_limit:
            upcoming[gpu_id].append(reservation_id)
    wanted = set(current.values()) | {r for ids in upcoming.values() for r in ids}
    reservations = reservation_queryset().in_bulk(wanted)
    return [
        {
            "gpu": gpu,
            "current": reservations.get(current.get(gpu.id)),
            "upcoming": [reservations[r] for r in upcoming.get(gpu.id, [])],
        }
        for gpu in gpus
    ]


def notices_unread(user):
    """The user's unread notices, newest first (the pages' banner and list)."""
    return Notice.objects.filter(user=user, read_at__isnull=True).select_related("reservation")

# --- The calendar -------------------------------------------------------------------------------


def calendar_gpus():
    """Every GPU with its node, in the calendar's track order (grouped by node)."""
    return list(GPU.objects.select_related("node").order_by("node__hostname", "index"))


def calendar_bookings(*, start, end, gpu_ids):
    """The bookings holding any of `gpu_ids` during [start, end), as plain rows of what the calendar
    shows (the feed serves hundreds at a time: no model instances), each with its "gpus".

    The allocations are read through their (gpu, start, end) index over the window only
    (overlapping_allocations), so the cost grows with the window and not with the history."""
    held = defaultdict(list)
    rows = (
        overlapping_allocations(gpu_ids, start, end)
        .order_by("gpu_id")
        .values_list("reservation_id", "gpu_id")
    )
    for reservation_id, gpu_id in rows:
        held[reservation_id].append(gpu_id)
    bookings = list(
        Reservation.objects.filter(pk__in=list(held))
        .order_by("start", "id")
        .values(
            "id", "start", "end", "title", "priority", "preemptible", "borrowed", "status", "user_id", "team_id",
            "user__username", "team__slug", "team__colour",
            # An occurrence of a recurring booking: its series' rule, for the calendar to say so.
            "series_id", "series__rule", "series__first_start", "series__time_zone",
        )
    )
    for booking in bookings:
        booking["gpus"] = held[booking["id"]]
    return bookings


def waitlisted(*, now, limit=50):
    """Waiting requests that could still be served, soonest first (the calendar lists them apart)."""
    return list(
        Reservation.objects.filter(status=Reservation.Status.WAITLISTED, end__gt=now)
        .select_related("user", "team")
        .order_by("start", "id")[:limit]
    )


def calendar_feed_reservations(*, start, end, user=None, team=None, series=()):
    """The bookings of one iCal feed: those `user` owns, or those of `team`, and those of the series
    whose ids are in `series` (whoever holds them), that overlap [start, end), cancelled ones included
    (a feed must say so, or calendar apps keep showing them).

    Each carries `revision`, the number of its audit entries: the log is append-only and every change
    to a booking writes an entry, so it only ever grows, as iCal's SEQUENCE must. The window bounds
    the cost, however long the history; the queries are a fixed two.
    """
    if (user is None) == (team is None):
        raise ValueError("Give exactly one of user or team.")
    qs = Reservation.objects.filter(policy.overlapping(start, end), start__gt=start - policy.longest_booking())
    whose = Q(user=user) if user is not None else Q(team=team)
    if series:
        whose |= Q(series_id__in=list(series))
    qs = qs.filter(whose)
    return (
        qs.select_related("user", "team")
        .prefetch_related(
            Prefetch(
                "allocations",
                queryset=Allocation.objects.select_related("gpu__node").order_by("gpu_id"),
                to_attr="held_allocations",
            )
        )
        .annotate(revision=Count("audit_entries"))
        .order_by("start", "id")
    )


# --- The pages: a person's bookings, a booking's page, notices ---------------------------------


def reservations_upcoming(user, *, now):
    """The user's bookings that still hold (or wait for) time, soonest first."""
    return reservation_queryset().filter(
        user=user, status__in=Reservation.OPEN_STATUSES, end__gt=now
    ).order_by("start", "id")


def reservations_past(user, *, now):
    """The user's other bookings: ended, cancelled, completed or preempted, latest first."""
    return (
        reservation_queryset()
        .filter(user=user)
        .exclude(status__in=Reservation.OPEN_STATUSES, end__gt=now)
        .order_by("-start", "-id")
    )


def waitlist_position(reservation, now=None):
    """How many waitlisted requests come before this one when the waitlist is promoted (0: it is
    tried first; the fair-share order, quotas.waitlist_order), or None when it is not waitlisted."""
    return waitlist_positions([reservation], now=now).get(reservation.pk)


def waitlist_positions(reservations, now=None):
    """waitlist_position() of each waitlisted booking in `reservations`, by id."""
    wanted = {r.pk for r in reservations if r.status == Reservation.Status.WAITLISTED}
    if not wanted:
        return {}
    order = waitlist_order(now or timezone.now())
    return {reservation_id: index for index, reservation_id in enumerate(order) if reservation_id in wanted}


def reservation_page(reservation_id):
    """One booking with what its page shows (GPUs, owner, team, job, who preempted it, what it was
    rebooked from, its rebookings, its series), or None."""
    reservation = (
        reservation_queryset()
        .select_related("preempted_by__user", "rebook_of", "series")
        .prefetch_related(Prefetch("rebooks", queryset=Reservation.objects.order_by("start", "id")))
        .filter(pk=reservation_id)
        .first()
    )
    return reservation


def audit_history(reservation, *, with_details):
    """A booking's audit entries, oldest first. Without `with_details` (a viewer who may not see the
    booking's job: policy.JobViewer), each entry's reason and before/after are blanked, as they
    name jobs ("job 12 asked to stop") another team must not learn about: when, who and what remain."""
    entries = list(AuditEntry.objects.filter(reservation=reservation).select_related("actor").order_by("created", "id"))
    if not with_details:
        for entry in entries:
            entry.reason, entry.before, entry.after = "", None, None
    return entries


def notices_of(user):
    """All of the user's notices, newest first."""
    return Notice.objects.filter(user=user).select_related("reservation").order_by("-created", "-id")


def teams_of(user):
    """The teams a person may look at (their standing, their week): their own; staff, every team."""
    teams = Team.objects.all() if user.is_staff else Team.objects.filter(memberships__user=user)
    return teams.order_by("name", "id")


def memberships_of(user):
    """The user's teams with their role in each, by team name (the profile page)."""
    return list(user.memberships.select_related("team").order_by("team__name"))
