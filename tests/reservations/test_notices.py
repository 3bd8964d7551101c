"""Notices reach people three ways: in the app and API, by e-mail (at most once, however often its
task is delivered), and as a JSON POST to the team's webhook, each retried with backoff by a real
Celery worker by its own settings, never inside the booking's transaction."""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from reservations import policy, services
from reservations.models import Notice

from ..receivers import MailReceiver, WebhookReceiver
from ..support import book, client_for, make_user, wait_for
from ..workers import Worker, purge_central_queue


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def mailed_notice(team, name="mailed", email=None):
    """A notice to someone with an e-mail address (made directly: no task is queued for it)."""
    user = make_user(name, team, email=email or f"{name}@example.org")
    return Notice.objects.create(user=user, kind=Notice.Kind.MOVED, message="Your booking was moved.")


def moved_victim_notice(cluster, owner, high_booker, start):
    """A low booking not yet begun, moved by a high one: its owner gets a "moved" notice."""
    victim = book(owner, cluster["node1"][:1], start=start, priority="low")
    services.reservation_create(user=high_booker, gpu_ids=[cluster["node1"][0].pk], start=start, slots=1, priority="high")
    return Notice.objects.get(user=owner, reservation=victim)


def test_an_email_django_refuses_to_send_is_recorded_and_not_tried_again(team):
    # An address with a header injected into it (from a directory's mail attribute, say).
    notice = mailed_notice(team, email="mailed@example.org\nBcc: someone@example.org")

    first = services.notice_email(notice_id=notice.pk)
    again = services.notice_email(notice_id=notice.pk)

    assert first is None and again is None  # nothing for a retry to mend
    assert mail.outbox == []
    refused = Notice.objects.get(pk=notice.pk)
    assert refused.emailed_at is None and refused.email_error.startswith("Not sent: BadHeaderError")


@pytest.mark.usefixtures("frozen")
def test_a_notice_is_posted_to_the_team_webhook_as_json(cluster, team, owner, high_booker, receiver):
    team.webhook_url = receiver.url
    team.save()
    notice = moved_victim_notice(cluster, owner, high_booker, policy.ceil_to_slot(timezone.now()) + timedelta(hours=2))

    assert services.notice_webhook_post(notice_id=notice.pk) is None

    (call,) = receiver.received
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["headers"]["X-Notice-Id"] == str(notice.pk)
    assert call["json"]["kind"] == "moved" and call["json"]["team"] == "vision" and call["json"]["user"] == "owner"
    assert call["json"]["data"]["preempted_by"] == notice.data["preempted_by"]
    notice.refresh_from_db()
    assert notice.webhook_delivered_at is not None and notice.webhook_attempts == 1
    assert services.notice_webhook_post(notice_id=notice.pk) is None and len(receiver.received) == 1  # once


@pytest.mark.usefixtures("frozen")
def test_a_failing_webhook_reports_the_error_and_counts_the_attempt(cluster, team, owner, high_booker):
    with WebhookReceiver(statuses=[503]) as receiver:
        team.webhook_url = receiver.url
        team.save()
        notice = moved_victim_notice(cluster, owner, high_booker, policy.ceil_to_slot(timezone.now()) + timedelta(hours=2))

        error = services.notice_webhook_post(notice_id=notice.pk)

    assert "503" in error
    notice.refresh_from_db()
    assert notice.webhook_delivered_at is None and notice.webhook_attempts == 1 and "503" in notice.webhook_error


@pytest.mark.usefixtures("frozen")
def test_a_notice_is_emailed_to_its_user_once(cluster, team, high_booker):
    owner = make_user("mailed", team, email="mailed@example.org")
    notice = moved_victim_notice(cluster, owner, high_booker, policy.ceil_to_slot(timezone.now()) + timedelta(hours=2))

    services.notice_email(notice_id=notice.pk)
    services.notice_email(notice_id=notice.pk)

    (message,) = mail.outbox
    assert message.to == ["mailed@example.org"]
    assert message.subject == f"[GPU scheduler] Booking moved: reservation #{notice.reservation_id}"
    assert "had not begun" in message.body
    notice.refresh_from_db()
    assert notice.emailed_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_of_the_email_task_while_the_first_is_sending_sends_nothing(team, settings):
    """acks_late: a worker lost mid-send, or a task past the visibility timeout, is delivered again."""
    notice = mailed_notice(team)
    with MailReceiver(hold=True) as smtp:
        for name, value in smtp.settings().items():
            setattr(settings, name, value)
        first = threading.Thread(target=send_and_close, args=[notice.pk])
        first.start()
        assert smtp.arrived.wait(30), "the first delivery's e-mail did not reach the server"

        second = services.notice_email(notice_id=notice.pk)

        smtp.release()
        first.join(30)

    assert second is None
    assert [message["to"] for message in smtp.received] == [["mailed@example.org"]]
    assert Notice.objects.get(pk=notice.pk).emailed_at is not None


def send_and_close(notice_id):
    try:
        services.notice_email(notice_id=notice_id)
    finally:
        connection.close()  # this thread's own connection


def test_an_email_the_server_refuses_is_released_for_the_retry_which_sends_it(team, settings):
    notice = mailed_notice(team)
    with MailReceiver(refusals={"mailed@example.org": 1}) as smtp:
        for name, value in smtp.settings().items():
            setattr(settings, name, value)

        error = services.notice_email(notice_id=notice.pk)
        refused = Notice.objects.get(pk=notice.pk)
        retried = services.notice_email(notice_id=notice.pk)

    assert "451" in error
    assert refused.email_claimed_at is None and refused.emailed_at is None and "451" in refused.email_error
    assert retried is None
    assert len(smtp.accepted()) == 1
    sent = Notice.objects.get(pk=notice.pk)
    assert sent.emailed_at is not None and sent.email_error == ""


@pytest.mark.usefixtures("frozen")
def test_a_webhook_that_does_not_answer_within_the_timeout_is_an_error(cluster, team, owner, high_booker, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    with WebhookReceiver(delay=3) as receiver:
        team.webhook_url = receiver.url
        team.save()
        notice = moved_victim_notice(cluster, owner, high_booker, policy.ceil_to_slot(timezone.now()) + timedelta(hours=2))

        error = services.notice_webhook_post(notice_id=notice.pk)

    assert error.startswith("ReadTimeout")
    notice.refresh_from_db()
    assert notice.webhook_delivered_at is None and notice.webhook_error.startswith("ReadTimeout")


@pytest.mark.usefixtures("frozen")
def test_the_team_webhook_url_must_be_http(team):
    team.webhook_url = "file:///etc/passwd"
    with pytest.raises(ValidationError) as raised:
        team.full_clean()
    assert "webhook_url" in raised.value.message_dict


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_worker_delivers_after_commit_retrying_a_failing_webhook_with_backoff(
    cluster, team, high_booker, tmp_path
):
    owner = make_user("mailed", team, email="mailed@example.org")
    purge_central_queue()
    worker = Worker(
        tmp_path / "worker.log", ["celery"], "central",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(tmp_path / "mail"),
    ).start()
    try:
        with WebhookReceiver(statuses=[500, 500]) as receiver:
            team.webhook_url = receiver.url
            team.save()
            notice = moved_victim_notice(cluster, owner, high_booker, policy.ceil_to_slot(timezone.now()) + timedelta(hours=2))

            delivered = wait_for(
                lambda: Notice.objects.filter(pk=notice.pk, webhook_delivered_at__isnull=False).first(), 120,
                "the webhook delivery",
            )
    finally:
        worker.stop()

    assert delivered.webhook_attempts == 3 and delivered.webhook_error == ""
    assert [call["headers"]["X-Notice-Id"] for call in receiver.received] == [str(notice.pk)] * 3
    first, second, third = (call["at"] for call in receiver.received)
    assert second - first >= 4.5 and third - second >= 9.5  # backoff: 5 s, then 10 s
    assert delivered.emailed_at is not None
    (mail_file,) = (tmp_path / "mail").iterdir()
    assert "mailed@example.org" in mail_file.read_text() and "had not begun" in mail_file.read_text()
    assert client_for(owner).get("/api/v1/notices/").json()["results"][0]["id"] == notice.pk


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_worker_retries_a_refused_email_by_the_email_settings_then_gives_up(team, tmp_path):
    """EMAIL_MAX_RETRIES 1 with WEBHOOK_MAX_RETRIES 0: one retry, as the e-mail settings say."""
    purge_central_queue()
    with MailReceiver(refusals={"mailed@example.org": 1, "refused@example.org": 99}) as smtp:
        worker = Worker(
            tmp_path / "worker.log", ["celery"], "central",
            EMAIL_MAX_RETRIES="1", WEBHOOK_MAX_RETRIES="0",
            **{name: str(value) for name, value in smtp.settings().items()},
        ).start()
        try:
            mailed = services.notice_send(user=make_user("mailed", team, email="mailed@example.org"),
                                          kind=Notice.Kind.MOVED, message="Moved, mailed at the second try.")
            refused = services.notice_send(user=make_user("refused", team, email="refused@example.org"),
                                           kind=Notice.Kind.MOVED, message="Moved, never mailed.")

            wait_for(
                lambda: Notice.objects.filter(pk=mailed.pk, emailed_at__isnull=False).exists(), 120, "the retried e-mail"
            )
            gave_up = wait_for(
                lambda: Notice.objects.filter(pk=refused.pk, email_error__startswith="Gave up").first(), 120,
                "the e-mail given up",
            )
        finally:
            worker.stop()

    mailed_tries = [message for message in smtp.received if message["to"] == ["mailed@example.org"]]
    refused_tries = [message for message in smtp.received if message["to"] == ["refused@example.org"]]
    assert [message["accepted"] for message in mailed_tries] == [False, True]
    assert mailed_tries[1]["at"] - mailed_tries[0]["at"] >= 4.5  # backoff: 5 s
    assert [message["accepted"] for message in refused_tries] == [False, False]
    assert gave_up.emailed_at is None and "451" in gave_up.email_error
