"""Product metrics read from the database at scrape time: one cheap query per family.

They are gauges of what the database holds, so every web worker reports the same numbers and
nothing needs adding up across processes. Every query is bounded by a window (the last 24 hours and
7 days, WINDOWS) or by what is open now, never by the size of a table: a scrape costs the same with
years of history as on day one (bench/history.py).
"""

import logging
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from reservations import selectors
from reservations.models import GPU, AuditEntry, Node, Notice, Reservation, Team
from trainer.models import TrainingJob

log = logging.getLogger(__name__)

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
PREEMPTION_OUTCOMES = {
    AuditEntry.Action.PREEMPT: "scheduled",
    AuditEntry.Action.RECLAIM: "reclaimed",
    AuditEntry.Action.REBOOK: "rebooked",
    AuditEntry.Action.WITHDRAW: "withdrawn",
}


def _overlap_hours(start, end, since, until):
    seconds = (min(end, until) - max(start, since)).total_seconds()
    return max(seconds, 0.0) / 3600


class DatabaseCollector:
    """A prometheus_client custom collector; `now` fixes the clock for tests."""

    def __init__(self, now=None):
        self.now = now

    def describe(self):
        # Nothing: describing must not query the database (a registry may describe at register time).
        return []

    def collect(self):
        now = self.now or timezone.now()
        up = GaugeMetricFamily("gpu_scheduler_database_up", "1 when the database answered this scrape's queries.")
        try:
            families = [
                *self._bookings(now),
                *self._gpu_hours(now),
                self._preemptions(now),
                self._jobs(now),
                self._heartbeats(now),
                self._notices(now),
                *self._team_quotas(now),
            ]
        except DatabaseError:
            log.exception("metrics: the database did not answer")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _bookings(self, now):
        bookings = GaugeMetricFamily(
            "gpu_scheduler_bookings",
            "Bookings by status and priority: the open ones (waitlisted, confirmed, active), and the others "
            "whose end is within the last 7 days or later.",
            labels=["status", "priority"],
        )
        waitlist = GaugeMetricFamily("gpu_scheduler_waitlist_length", "Waitlisted requests.")
        counts = {(s, p): 0 for s in Reservation.Status.values for p in Reservation.Priority.values}
        shown = Q(status__in=Reservation.OPEN_STATUSES) | Q(end__gte=now - WINDOWS["7d"])
        for row in Reservation.objects.filter(shown).order_by().values("status", "priority").annotate(n=Count("id")):
            counts[row["status"], row["priority"]] = row["n"]
        for (status, priority), n in sorted(counts.items()):
            bookings.add_metric([status, priority], n)
        waitlist.add_metric([], sum(n for (status, _), n in counts.items() if status == Reservation.Status.WAITLISTED))
        return bookings, waitlist

    def _gpu_hours(self, now):
        """Booked: GPU-hours held by bookings in the window. Used: GPU-hours in which a job trained
        on its booking (its run intersected with the booking, times the booking's GPUs)."""
        since = now - max(WINDOWS.values())
        booked = GaugeMetricFamily(
            "gpu_scheduler_booked_gpu_hours", "GPU-hours booked over the last window (up to now).", labels=["window"]
        )
        used = GaugeMetricFamily(
            "gpu_scheduler_used_gpu_hours",
            "GPU-hours in which a training job ran on its booking over the last window.",
            labels=["window"],
        )
        # The selector bounds the window on each GPU's index (gpu, start, end), whatever the history.
        held = list(selectors.overlapping_allocations(GPU.objects.values("pk"), since, now).values_list("start", "end"))
        runs = list(
            TrainingJob.objects.filter(started_at__lt=now)
            .filter(Q(ended_at__gt=since) | Q(ended_at=None, status__in=TrainingJob.LIVE))
            .values_list("started_at", "ended_at", "reservation__start", "reservation__end", "reservation__gpu_count")
        )
        for window, length in WINDOWS.items():
            start = now - length
            booked.add_metric([window], sum(_overlap_hours(a, b, start, now) for a, b in held))
            used.add_metric(
                [window],
                sum(
                    gpus * _overlap_hours(max(ran, begin), min(ended or now, end), start, now)
                    for ran, ended, begin, end, gpus in runs
                ),
            )
        return booked, used

    def _preemptions(self, now):
        family = GaugeMetricFamily(
            "gpu_scheduler_preemptions",
            "Preemption steps in the audit log over the last window: scheduled (a victim warned), reclaimed "
            "(its GPUs taken), rebooked (its rest booked again), withdrawn (the preemptor went away first).",
            labels=["outcome", "window"],
        )
        since = now - max(WINDOWS.values())
        rows = (
            AuditEntry.objects.filter(action__in=list(PREEMPTION_OUTCOMES), created__gte=since, created__lte=now)
            .order_by()
            .values_list("action")
            .annotate(**{window: Count("id", filter=Q(created__gte=now - length)) for window, length in WINDOWS.items()})
        )
        counts = {action: dict.fromkeys(WINDOWS, 0) for action in PREEMPTION_OUTCOMES}
        for action, *numbers in rows:
            counts[action] = dict(zip(WINDOWS, numbers))
        for action, outcome in PREEMPTION_OUTCOMES.items():
            for window in WINDOWS:
                family.add_metric([outcome, window], counts[action][window])
        return family

    def _jobs(self, now):
        family = GaugeMetricFamily(
            "gpu_scheduler_jobs",
            "Training jobs by status: those running (starting, running, stopping), those waiting to start or "
            "resume whose booking ends within the last 7 days or later, and those that ended in the last 7 days.",
            labels=["status"],
        )
        since = now - WINDOWS["7d"]
        # A job left waiting when its booking ended (never started, or interrupted for good) keeps its
        # status: counted for the week after its booking, not for ever.
        shown = (
            Q(status__in=TrainingJob.LIVE)
            | Q(status__in=TrainingJob.WAITING, reservation__end__gte=since)
            | Q(ended_at__gte=since)
        )
        counts = dict.fromkeys(TrainingJob.Status.values, 0)
        counts.update(TrainingJob.objects.filter(shown).order_by().values_list("status").annotate(n=Count("id")))
        for status, n in counts.items():
            family.add_metric([status], n)
        return family

    def _heartbeats(self, now):
        family = GaugeMetricFamily(
            "gpu_scheduler_node_heartbeat_age_seconds",
            "Seconds since each node's agent last sent a heartbeat (nodes that never sent one are left out).",
            labels=["node"],
        )
        for hostname, last in Node.objects.exclude(last_heartbeat=None).values_list("hostname", "last_heartbeat"):
            family.add_metric([hostname], max((now - last).total_seconds(), 0.0))
        return family

    def _notices(self, now):
        family = GaugeMetricFamily(
            "gpu_scheduler_notice_deliveries",
            "Notices written in the last window and delivered outside the app, by channel, and webhook "
            "deliveries that failed (an error on record: retrying, or given up).",
            labels=["channel", "result", "window"],
        )
        kinds = {
            ("email", "delivered"): ~Q(emailed_at=None),
            ("webhook", "delivered"): ~Q(webhook_delivered_at=None),
            ("webhook", "failed"): Q(webhook_delivered_at=None) & ~Q(webhook_error=""),
        }
        aggregates = {
            f"{channel}_{result}_{window}": Count("id", filter=which & Q(created__gte=now - length))
            for (channel, result), which in kinds.items()
            for window, length in WINDOWS.items()
        }
        totals = Notice.objects.filter(created__gte=now - max(WINDOWS.values())).aggregate(**aggregates)
        for channel, result in kinds:
            for window in WINDOWS:
                family.add_metric([channel, result, window], totals[f"{channel}_{result}_{window}"])
        return family

    def _team_quotas(self, now):
        """Each team's standing in the current quota week (selectors.team_standings: two queries,
        bounded by the week, whatever the history): its quota, what it booked in quota and borrowed."""
        quota = GaugeMetricFamily(
            "gpu_scheduler_team_quota_gpu_hours",
            "Each team's quota of GPU-hours a week (teams with no such limit are left out).",
            labels=["team"],
        )
        booked = GaugeMetricFamily(
            "gpu_scheduler_team_booked_gpu_hours",
            "GPU-hours each team booked in quota in the current quota week (borrowed time not counted).",
            labels=["team"],
        )
        borrowed = GaugeMetricFamily(
            "gpu_scheduler_team_borrowed_gpu_hours",
            "GPU-hours each team booked over its quota, as borrowed time, in the current quota week.",
            labels=["team"],
        )
        for standing in selectors.team_standings(Team.objects.order_by("slug"), now):
            slug = standing.team.slug
            if standing.quota is not None and standing.quota.gpu_hours_per_week is not None:
                quota.add_metric([slug], standing.quota.gpu_hours_per_week)
            booked.add_metric([slug], standing.booked_hours)
            borrowed.add_metric([slug], standing.borrowed_hours)
        return quota, booked, borrowed
