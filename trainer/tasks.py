"""Thin tasks. start_job/stop_job go to a node's own queue and only wake its agent, which decides
from the database (so a duplicate or a late message is harmless); reconcile runs centrally on beat."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import metrics, queue, services
from .agent import reconcile_soon

START_LOOKAHEAD = timedelta(seconds=30)


@shared_task(name=queue.START_JOB)
def start_job(job_id):
    reconcile_soon()


@shared_task(name=queue.STOP_JOB)
def stop_job(job_id, reason):
    services.job_request_stop(job_id=job_id, reason=reason)
    reconcile_soon()


@shared_task(name="trainer.tasks.reconcile")
@metrics.RECONCILE_SECONDS.time()
def reconcile():
    """Central, level-triggered: lost nodes, precise start nudges, early release, end-of-slot and
    node-away notices."""
    now = timezone.now()
    interrupted = services.nodes_mark_lost(now=now)
    nudged = services.jobs_nudge_due(now=now, lookahead=START_LOOKAHEAD)
    released = services.reservations_release_unused(now=now)
    warned = services.slot_end_notices(now=now, lead=timedelta(minutes=settings.PREEMPTION_NOTICE_MINUTES))
    away = services.node_away_notices(now=now)
    return {"interrupted": interrupted, "nudged": nudged, "released": released, "warned": warned, "away": away}
