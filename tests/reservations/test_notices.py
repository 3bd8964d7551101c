"""Notices reach people three ways: in the app and API, by e-mail, and as a JSON POST to the team's
webhook, retried with backoff by a real Celery worker, never inside the booking's transaction."""

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from reservations import policy, services
from reservations.models import Notice

from ..receivers import WebhookReceiver
from ..support import book, client_for, make_user, wait_for
from ..workers import Worker, purge_central_queue


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def moved_victim_notice(cluster, owner, high_booker, start):
    """A low booking not yet begun, moved by a high one: its owner gets a "moved" notice."""
    victim = book(owner, cluster["node1"][:1], start=start, priority="low")
    services.reservation_create(user=high_booker, gpu_ids=[cluster["node1"][0].pk], start=start, slots=1, priority="high")
    return Notice.objects.get(user=owner, reservation=victim)


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

    assert services.notice_email(notice_id=notice.pk) is True
    assert services.notice_email(notice_id=notice.pk) is False

    (message,) = mail.outbox
    assert message.to == ["mailed@example.org"]
    assert message.subject == f"[GPU scheduler] Booking moved: reservation #{notice.reservation_id}"
    assert "had not begun" in message.body


@pytest.mark.usefixtures("frozen")
def test_the_team_webhook_url_must_be_http(team):
    team.webhook_url = "file:///etc/passwd"
    with pytest.raises(ValidationError) as raised:
        team.full_clean()
    assert "webhook_url" in raised.value.message_dict


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
