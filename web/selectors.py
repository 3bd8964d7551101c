"""Reads of the pages' own data (the booking reads are in reservations.selectors)."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Prefetch

from reservations import policy, recurrence, selectors
from reservations.models import AuditEntry, Membership, Node, Reservation, Series
from serving.models import ModelVersion, Replica, Serving
from trainer.selectors import job_progress

from .models import FEED_TOKEN, CalendarFeed


def calendar_feed_by_token(token):
    """The feed this secret opens, or None: an unknown token, a deactivated user, or a team feed
    whose holder has left the team (checked on every request, so leaving closes the feed at once).
    A string not shaped like a token is no feed, without a query."""
    if not isinstance(token, str) or not FEED_TOKEN.fullmatch(token):
        return None
    feed = CalendarFeed.objects.select_related("user", "team").filter(token=token).first()
    if feed is None or not feed.user.is_active:
        return None
    if feed.team_id is not None and not Membership.objects.filter(user_id=feed.user_id, team_id=feed.team_id).exists():
        return None
    return feed


# Replicas shown on a booking's page: the newest of each device first; a long-running booking whose
# replicas restarted often shows the last few only.
PAGE_REPLICAS = 12


def booking_serving(reservation):
    """The booking's serving with its replicas (newest first), or None when it serves nothing."""
    replicas = Replica.objects.select_related("node", "gpu__node").order_by("gpu_id", "-id")
    serving = Serving.objects.prefetch_related(Prefetch("replicas", queryset=replicas)).filter(reservation=reservation).first()
    if serving is not None:
        serving.shown_replicas = [_with_memory(r) for r in serving.replicas.all()[:PAGE_REPLICAS]]
    return serving


def _with_memory(replica):
    """Its resident models' bytes, in MiB and against its budget, for the page's meter."""
    used = sum(model.get("bytes") or 0 for model in replica.resident)
    replica.used_mib = round(used / (1 << 20), 1)
    replica.budget_mib = round(replica.memory_budget / (1 << 20), 1)
    return replica


def servable_models(user):
    """(value, label) choices of the models `user`'s teams may serve: each model by name (its
    latest version at the slot start), then each of its versions. A booking serves its own team's
    models (the service checks), so a name two of the user's teams use is one choice, labelled with
    both teams: it means the model of the team the booking is charged to."""
    versions = (
        ModelVersion.objects.filter(model__team__memberships__user=user)
        .select_related("model__team")
        .order_by("model__name", "-version", "model__team__slug")
        .distinct()
    )
    teams_of = {}  # choice value -> (its label before the teams, the teams), in the order shown
    for version in versions:
        name, team = version.model.name, version.model.team.slug
        # Newest first: a name's first row is its latest version.
        teams_of.setdefault(name, (f"{name} (latest: version {version.version})", set()))[1].add(team)
        teams_of.setdefault(f"{name}:{version.version}", (f"{name} version {version.version}", set()))[1].add(team)
    return [(value, f"{label} · {', '.join(sorted(teams))}") for value, (label, teams) in teams_of.items()]


@dataclass(frozen=True)
class NodeGPUs:
    """A node and its GPUs, as the calendar's tracks and the booking form's GPU list show them."""

    node: Node
    gpus: list

    @property
    def can_train(self):
        """A job booked now starts: the node's worker heartbeats (online) and a GPU is healthy.
        Offline nodes stay bookable; their jobs wait for the worker."""
        return self.node.online and any(gpu.healthy for gpu in self.gpus)

    @property
    def state(self):
        if self.can_train:
            return "online · can train now"
        if self.node.online:
            return "online · no healthy GPU"
        return "offline · bookable"


def nodes_with_gpus(gpus):
    """`gpus` (in the calendar's order, grouped by node) as NodeGPUs: the nodes that can train now
    first, then the other online ones, then the offline ones, each group by host name."""
    nodes = {}
    for gpu in gpus:
        nodes.setdefault(gpu.node_id, NodeGPUs(gpu.node, []))
        nodes[gpu.node_id].gpus.append(gpu)
    return sorted(nodes.values(), key=lambda group: (not group.can_train, not group.node.online, group.node.hostname))


# --- Recurring bookings ------------------------------------------------------------------------


def rule_words(rule, first_start, time_zone):
    """A series' rule in words: "every Monday at 10:00 Europe/Berlin time, 4 times"."""
    return recurrence.describe(recurrence.parse_rule(rule, capped=False), first_start, recurrence.zone(time_zone), time_zone)


def series_for_page(series_id):
    """The series with its owner and team, or None."""
    return Series.objects.select_related("user", "team").filter(pk=series_id).first()


@dataclass
class OccurrenceRow:
    """One occurrence of a series as its page lists it. `state`: its booking's status, or for one
    without a booking: skipped (could not be booked; `reason`), cancelled (before it was booked),
    later (beyond the booking horizon: beat books it), due (within it, not booked yet) or missed (its
    time passed unbooked). `rebooks`: the rest of a preempted booking, booked again."""

    occurrence: datetime  # the start its rule gives it (its booking may have moved)
    start: datetime
    end: datetime
    state: str
    reservation: Reservation | None = None
    rebooks: list = field(default_factory=list)
    reason: str = ""
    job: dict | None = None
    may_cancel: bool = False


SERIES_HISTORY = 50


def series_rows(series, *, now, viewer):
    """Every occurrence of `series` (at most SERIES_MAX_OCCURRENCES), in order, as OccurrenceRow:
    its booking (GPUs loaded), what became of it, and its job's progress where `viewer` (a
    policy.JobViewer) may see it. A fixed number of queries, however many occurrences."""
    starts = recurrence.stored_starts(series)
    bookings = selectors.series_occurrences(series)
    by_id = {b.pk: b for b in bookings}
    first = {b.occurrence: b for b in bookings if b.rebook_of_id is None}
    rebooks = defaultdict(list)
    for booking in bookings:
        root = booking
        # A rebooking of a rebooking belongs to the occurrence its chain began with.
        while root.rebook_of_id is not None and root.rebook_of_id in by_id:
            root = by_id[root.rebook_of_id]
        if root is not booking:
            rebooks[root.pk].append(booking)
    visible = [b.pk for b in bookings if viewer.may_see_booking_of(b.user_id, b.team_id)]
    progress = job_progress(visible) if visible else {}
    skipped = {entry["at"]: entry.get("reason", "") for entry in series.skipped}
    cancelled = set(series.cancelled_occurrences)
    length = recurrence.span(series.slots)
    going = series.cancelled_at is None
    rows = []
    for start in starts:
        booking = first.get(start)
        key = start.isoformat()
        if booking is not None:
            row = OccurrenceRow(
                occurrence=start, start=booking.start, end=booking.end, state=booking.status, reservation=booking,
                rebooks=rebooks.get(booking.pk, []), job=progress.get(booking.pk),
                may_cancel=going and booking.status in Reservation.OPEN_STATUSES and key not in cancelled,
            )
        else:
            end = start + length
            if not going or key in cancelled or (series.ends_before is not None and start >= series.ends_before):
                state = "cancelled"
            elif key in skipped:
                state = "skipped"
            elif not policy.occurrence_in_horizon(start, series.slots, now):
                state = "later"
            elif end <= now:
                state = "missed"
            else:
                state = "due"
            row = OccurrenceRow(
                occurrence=start, start=start, end=end, state=state, reason=skipped.get(key, ""),
                may_cancel=state in ("later", "due", "skipped") and end > now,
            )
        rows.append(row)
    return rows


def series_history(series, *, with_details):
    """The series' own audit entries (made, changed, cancelled, transferred), the latest
    SERIES_HISTORY of them, oldest first; without `with_details` their reasons and states are
    blanked, as a booking's are (reservations.selectors.audit_history)."""
    entries = list(
        AuditEntry.objects.filter(target=f"series:{series.pk}").select_related("actor").order_by("-created", "-id")[:SERIES_HISTORY]
    )
    entries.reverse()
    if not with_details:
        for entry in entries:
            entry.reason, entry.before, entry.after = "", None, None
    return entries


def team_usernames(team_id):
    """The usernames of a team's members (a series' transfer offers them)."""
    return list(Membership.objects.filter(team_id=team_id).order_by("user__username").values_list("user__username", flat=True))
