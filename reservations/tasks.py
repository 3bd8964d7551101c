"""Thin Celery tasks: each calls a service and returns. All are safe to run twice."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import services


@shared_task(name="reservations.tasks.tick")
def tick():
    """Beat's clock: advance statuses, settle the waitlist, drop stale idempotency records."""
    now = timezone.now()
    advanced = services.reservations_advance(now=now)
    promoted = services.waitlist_promote(now=now)
    services.idempotency_prune(older_than=now - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS))
    return {"advanced": advanced, "promoted": len(promoted)}
