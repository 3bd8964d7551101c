"""Thin Celery tasks: each calls a service and returns. All are safe to run twice."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import services
from .models import Notice

log = logging.getLogger(__name__)


@shared_task(name="reservations.tasks.tick")
def tick():
    """Beat's clock: reclaim preempted GPUs, advance statuses, settle the waitlist, drop stale
    idempotency records."""
    now = timezone.now()
    reclaimed = services.reservations_reclaim_due(now=now)
    advanced = services.reservations_advance(now=now)
    promoted = services.waitlist_promote(now=now)
    services.idempotency_prune(older_than=now - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS))
    return {"reclaimed": reclaimed, "advanced": advanced, "promoted": len(promoted)}


@shared_task(name="reservations.tasks.reclaim")
def reclaim(reservation_id):
    later = services.reservation_reclaim(reservation_id=reservation_id)
    if later is not None:  # a job's minimum runtime moved the reclaim
        reclaim_at(reservation_id, later)


@shared_task(name="reservations.tasks.notice_email", max_retries=settings.WEBHOOK_MAX_RETRIES, bind=True)
def notice_email(self, notice_id):
    try:
        services.notice_email(notice_id=notice_id)
    except OSError as exc:  # smtplib's errors are OSErrors
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries))


@shared_task(name="reservations.tasks.notice_webhook", max_retries=settings.WEBHOOK_MAX_RETRIES, bind=True)
def notice_webhook(self, notice_id):
    error = services.notice_webhook_post(notice_id=notice_id)
    if error is None:
        return
    if self.request.retries >= self.max_retries:
        services.notice_webhook_gave_up(notice_id=notice_id, error=error)
        return
    raise self.retry(countdown=_backoff(self.request.retries))


def _backoff(retries):
    return min(2 ** retries * 5, settings.WEBHOOK_RETRY_BACKOFF_MAX_SECONDS)


# --- Queueing, called after commit. A broker that is down must not fail the request that made the
# change (it is committed): the failure is logged. A reclaim still happens (tick's sweep and the
# node agent see it in the database); the notice stays in the app and the API.

def _publish(task, *, args, **options):
    try:
        task.apply_async(args=args, **options)
    except Exception:
        log.exception("could not queue %s%s", task.name, tuple(args))


# A task with an eta waits unacknowledged in a worker; with Redis, one held past the visibility
# timeout is delivered again. Reclaims further off are left to tick's sweep (every TICK_SECONDS);
# the node agent stops the job itself at the reclaim time either way.
RECLAIM_ETA_HORIZON = timedelta(minutes=50)


def reclaim_at(reservation_id, when):
    if when - timezone.now() <= RECLAIM_ETA_HORIZON:
        _publish(reclaim, args=[reservation_id], eta=when)


def notice_deliver(notice_id):
    """Queue the e-mail and the webhook call a committed notice needs."""
    notice = Notice.objects.select_related("user", "reservation__team").filter(pk=notice_id).first()
    if notice is None:
        return
    if notice.user.email:
        _publish(notice_email, args=[notice_id])
    if notice.reservation is not None and notice.reservation.team.webhook_url:
        _publish(notice_webhook, args=[notice_id])
