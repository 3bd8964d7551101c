"""Notices: in the app and the API at once; by e-mail and to the team's webhook after commit."""

import json
import logging

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import queue
from ..models import AuditEntry, Notice
from .audit import audit_record
from .locks import service_transaction

log = logging.getLogger(__name__)

# How a delivery that is over without success says so, in email_error or webhook_error (a failed
# try that will be retried leaves its error without either).
GAVE_UP = "Gave up after retries: "
NOT_SENT = "Not sent: "


def notice_send(*, user, kind, message, reservation=None, data=None, audited=False, actor=None):
    """A notice in the app and the API; after commit, also by e-mail (if the user has an address)
    and to the reservation's team webhook (if it has one). With `audited`, the audit log records
    that it was sent, in the same transaction."""
    notice = Notice.objects.create(
        user=user, kind=kind, message=message, reservation=reservation, data=data or {}
    )
    if audited:
        audit_record(
            action=AuditEntry.Action.NOTICE, actor=actor, reservation=reservation,
            target=f"notice:{notice.pk}", reason=f"{notice.get_kind_display()} to {user.get_username()}: {message}",
        )
    if user.email:
        transaction.on_commit(lambda: queue.send(queue.NOTICE_EMAIL, notice.pk))
    if reservation is not None and reservation.team.webhook_url:
        transaction.on_commit(lambda: queue.send(queue.NOTICE_WEBHOOK, notice.pk))
    return notice


def notice_payload(notice):
    """What a team's webhook receives for a notice."""
    return {
        "id": notice.pk,
        "kind": notice.kind,
        "user": notice.user.get_username(),
        "team": notice.reservation.team.slug if notice.reservation else None,
        "reservation": notice.reservation_id,
        "message": notice.message,
        "data": notice.data,
        "created": notice.created.isoformat(),
    }


def notice_email(*, notice_id):
    """E-mail a notice to its user, at most once. Returns None when it is sent (or there is nothing to
    send), else the error, for the task to retry. Never called inside a transaction.

    The e-mail is claimed before it is sent, by a conditional update as job starts are claimed, so
    a task delivered twice (acks_late: a lost worker, the visibility timeout) sends it once. A send
    that fails releases the claim, for the task's retry. A worker that dies while sending leaves the
    claim and nothing sent: the notice is never e-mailed twice, and stays in the app and the API."""
    unsent = Notice.objects.filter(pk=notice_id, emailed_at=None, email_claimed_at=None)
    notice = unsent.select_related("user").first()
    if notice is None or not notice.user.email:
        return None
    if not unsent.update(email_claimed_at=timezone.now()):
        return None  # another delivery of the task claimed it first
    try:
        send_mail(
            subject=f"[GPU scheduler] {notice.get_kind_display()}"
            + (f": reservation #{notice.reservation_id}" if notice.reservation_id else ""),
            message=notice.message,
            from_email=None,
            recipient_list=[notice.user.email],
        )
    except OSError as exc:  # smtplib's errors are OSErrors: the server or the network, worth a retry
        error = f"{type(exc).__name__}: {exc}"
        Notice.objects.filter(pk=notice_id).update(email_claimed_at=None, email_error=error[:2000])
        return error
    except Exception as exc:  # the message itself (an address Django refuses, ...): no retry sends it
        log.exception("notice %s: e-mail not sent", notice_id)
        Notice.objects.filter(pk=notice_id).update(email_error=f"{NOT_SENT}{type(exc).__name__}: {exc}"[:2000])
        return None
    Notice.objects.filter(pk=notice_id).update(emailed_at=timezone.now(), email_error="")
    return None


def notice_email_gave_up(*, notice_id, error):
    Notice.objects.filter(pk=notice_id).update(email_error=f"{GAVE_UP}{error}"[:2000])


def notice_webhook_post(*, notice_id):
    """POST a notice to its reservation's team webhook. Returns None when delivered (or nothing to
    deliver), else the error, for the task to retry. Never called inside a transaction."""
    notice = (
        Notice.objects.select_related("user", "reservation__team")
        .filter(pk=notice_id, webhook_delivered_at=None)
        .first()
    )
    if notice is None or notice.reservation is None or not notice.reservation.team.webhook_url:
        return None
    Notice.objects.filter(pk=notice_id).update(webhook_attempts=F("webhook_attempts") + 1)
    error = _webhook_post(notice)
    if error is not None:
        Notice.objects.filter(pk=notice_id).update(webhook_error=error[:2000])
        return error
    Notice.objects.filter(pk=notice_id).update(webhook_delivered_at=timezone.now(), webhook_error="")
    return None


def _webhook_post(notice):
    """The POST itself: None for a 2xx answer, else what went wrong. The answer's body is not read."""
    try:
        with httpx.stream(
            "POST",
            notice.reservation.team.webhook_url,
            content=json.dumps(notice_payload(notice), cls=DjangoJSONEncoder).encode(),
            headers={
                "Content-Type": "application/json",
                "User-Agent": "gpu-scheduler-webhook/1",
                # The same id on every retry, so a receiver can drop duplicates.
                "X-Notice-Id": str(notice.pk),
                "X-Notice-Kind": notice.kind,
            },
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        ) as response:
            if response.is_success:
                return None
            return f"HTTP {response.status_code} {response.reason_phrase}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # no connection, a timeout, a URL httpx cannot use
        return f"{type(exc).__name__}: {exc}"


def notice_webhook_gave_up(*, notice_id, error):
    Notice.objects.filter(pk=notice_id).update(webhook_error=f"{GAVE_UP}{error}"[:2000])


def notices_mark_read(*, user, ids, now=None):
    """Mark the user's notices `ids` read (a page has shown them). Others' notices and those read
    already are left alone; returns how many changed. A plain update: two pages marking the same
    notice read at once both write a time, and either is right."""
    with service_transaction():
        return Notice.objects.filter(user=user, pk__in=list(ids), read_at__isnull=True).update(
            read_at=now or timezone.now()
        )


# A delivery begun and not over: an e-mail claimed and not sent (being sent now) or failed with a
# retry to come; a webhook tried and neither delivered nor given up. (A delivery not begun a day
# after its notice never will be: its task runs moments after the commit, and retries end within
# hours.)
EMAIL_UNDER_WAY = (
    Q(emailed_at=None)
    & (Q(email_claimed_at__isnull=False) | ~Q(email_error=""))
    & ~Q(email_error__startswith=GAVE_UP)
    & ~Q(email_error__startswith=NOT_SENT)
)
WEBHOOK_UNDER_WAY = Q(webhook_delivered_at=None, webhook_attempts__gt=0) & ~Q(webhook_error__startswith=GAVE_UP)


def notices_prune(*, older_than, batch_size=1000, max_batches=100):
    """Delete the notices created before `older_than` that their user has read, except those whose
    e-mail or webhook delivery is under way; unread ones stay whatever their age. In batches of
    `batch_size`, each its own short transaction, at most `max_batches` a call (a first run over
    years of notices spreads over a few days). Returns how many went."""
    prunable = Notice.objects.filter(read_at__isnull=False, created__lt=older_than).exclude(
        EMAIL_UNDER_WAY | WEBHOOK_UNDER_WAY
    )
    deleted = 0
    for _ in range(max_batches):
        batch = prunable.order_by("created", "id").values("pk")[:batch_size]
        with transaction.atomic():
            count = Notice.objects.filter(pk__in=batch).delete()[0]
        deleted += count
        if count < batch_size:
            break
    if deleted:
        log.info("deleted %d read notices created before %s", deleted, older_than.isoformat())
    return deleted
