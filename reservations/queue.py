"""Background work the booking services ask for, sent by task name: services never import tasks.

Everything here is called after commit (`transaction.on_commit`), so a worker always finds the rows.
A broker that is down must not fail the request that made the change (it is committed): the failure
is logged. Nothing is lost that way: a reclaim still happens (tick's sweep and the node agent read
the database), and a notice stays in the app and the API.
"""

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

RECLAIM = "reservations.tasks.reclaim"
NOTICE_EMAIL = "reservations.tasks.notice_email"
NOTICE_WEBHOOK = "reservations.tasks.notice_webhook"

# A task with an eta waits unacknowledged in a worker, and Redis delivers a task again when it is not
# acknowledged within the broker's visibility timeout (CELERY_VISIBILITY_TIMEOUT). So no eta may lie
# as far ahead as that: a reclaim further off than the timeout less this margin is left to tick's
# sweep (every TICK_SECONDS), and the node agent stops the job itself at the reclaim time either way.
# (A redelivered reclaim would be harmless, reservation_reclaim being idempotent, but it would pile up.)
ETA_MARGIN = timedelta(minutes=10)


def eta_horizon():
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    return max(timedelta(seconds=visibility) - ETA_MARGIN, timedelta(0))


def send(name, *args, **options):
    try:
        current_app.send_task(name, args=list(args), **options)
    except Exception:
        log.exception("could not queue %s%s", name, args)


def reclaim_at(reservation_id, when):
    if when - timezone.now() <= eta_horizon():
        send(RECLAIM, reservation_id, eta=when)
