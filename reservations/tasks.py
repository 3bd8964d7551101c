"""Thin Celery tasks: each calls a service and returns. All are safe to run twice."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import metrics, queue, services


@shared_task(name="reservations.tasks.tick")
@metrics.TICK_SECONDS.time()
def tick():
    """Beat's clock: reclaim preempted GPUs, advance statuses, settle the waitlist, drop stale
    idempotency records."""
    now = timezone.now()
    reclaimed = services.reservations_reclaim_due(now=now)
    advanced = services.reservations_advance(now=now)
    promoted = services.waitlist_promote(now=now)
    services.idempotency_prune(older_than=now - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS))
    return {"reclaimed": reclaimed, "advanced": advanced, "promoted": len(promoted)}


@shared_task(name="reservations.tasks.audit_partitions")
def audit_partitions():
    """Daily: the audit log's partitions for this month and the next AUDIT_PARTITION_MONTHS_AHEAD
    (PostgreSQL; nothing to do on SQLite)."""
    return services.audit_partitions_ensure(months_ahead=settings.AUDIT_PARTITION_MONTHS_AHEAD)


@shared_task(name="reservations.tasks.notices_prune")
def notices_prune():
    """Daily: read notices older than NOTICE_RETENTION_DAYS go (0: every notice is kept)."""
    if not settings.NOTICE_RETENTION_DAYS:
        return 0
    return services.notices_prune(older_than=timezone.now() - timedelta(days=settings.NOTICE_RETENTION_DAYS))


@shared_task(name="reservations.tasks.series_extend")
def series_extend():
    """Hourly: book the recurring bookings' occurrences that came within the booking horizon (twice
    at once is harmless: each occurrence is booked once)."""
    return services.series_extend(now=timezone.now())


@shared_task(name=queue.RECLAIM)
def reclaim(reservation_id):
    later = services.reservation_reclaim(reservation_id=reservation_id)
    if later is not None:  # a job's minimum runtime moved the reclaim
        queue.reclaim_at(reservation_id, later)


@shared_task(name=queue.NOTICE_EMAIL, max_retries=settings.EMAIL_MAX_RETRIES, bind=True)
def notice_email(self, notice_id):
    error = services.notice_email(notice_id=notice_id)
    _retry_unless_done(self, error, settings.EMAIL_RETRY_BACKOFF_MAX_SECONDS,
                       give_up=lambda: services.notice_email_gave_up(notice_id=notice_id, error=error))


@shared_task(name=queue.NOTICE_WEBHOOK, max_retries=settings.WEBHOOK_MAX_RETRIES, bind=True)
def notice_webhook(self, notice_id):
    error = services.notice_webhook_post(notice_id=notice_id)
    _retry_unless_done(self, error, settings.WEBHOOK_RETRY_BACKOFF_MAX_SECONDS,
                       give_up=lambda: services.notice_webhook_gave_up(notice_id=notice_id, error=error))


def _retry_unless_done(task, error, backoff_max, *, give_up):
    """A delivery that failed (`error`) is tried again with backoff, until its task's retries run out."""
    if error is None:
        return
    if task.request.retries >= task.max_retries:
        give_up()
        return
    raise task.retry(countdown=_backoff(task.request.retries, backoff_max))


def _backoff(retries, most):
    """Seconds before the next try: 5, 10, 20, ... up to `most`."""
    return min(2 ** retries * 5, most)
