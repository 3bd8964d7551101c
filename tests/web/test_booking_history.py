"""A booking's audit history on its page: everyone sees when, who and what; the reasons (which name
training jobs: "job 12 asked to stop") only those who may see the booking's job (its team, its owner,
staff)."""

import pytest

from reservations import services
from reservations.models import AuditEntry

from ..support import book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")

JOB_REASON = "job 12 asked to stop"


def history_of(response):
    text = text_of(response)
    return text[text.index("History"):]


@pytest.fixture
def booking_with_job_reasons(cluster, owner):
    reservation = book(owner, cluster["node1"][:1], title="fine-tune")
    services.audit_record(
        action=AuditEntry.Action.UPDATE, reservation=reservation, reason=JOB_REASON,
        before={"status": "confirmed", "job": 12}, after={"status": "active", "job": 12},
    )
    services.reservation_cancel(reservation_id=reservation.pk, actor=owner, reason="Job 7 finished before the booking's end")
    return reservation


@pytest.mark.parametrize("viewer", ["owner", "teammate", "staff"])
def test_those_who_may_see_the_job_see_the_reasons_in_the_history(request, booking_with_job_reasons, viewer):
    response = page_client(request.getfixturevalue(viewer)).get(f"/bookings/{booking_with_job_reasons.pk}/")

    history = history_of(response)
    assert "Reason" in history
    assert JOB_REASON in history
    assert "owner Cancelled Job 7 finished before the booking's end" in history


def test_another_teams_member_sees_when_who_and_what_but_no_reason(booking_with_job_reasons, outsider):
    response = page_client(outsider).get(f"/bookings/{booking_with_job_reasons.pk}/")

    assert response.status_code == 200
    history = history_of(response)
    assert "the scheduler Edited" in history
    assert "owner Cancelled" in history
    body = response.content.decode().lower()
    assert "job 12" not in body and "job 7" not in body
    assert "Reason" not in history


def test_the_times_in_the_reasons_are_shown_in_the_viewers_zone(cluster, owner, high_booker):
    victim = book(owner, cluster["node1"][:1], priority="low")
    book(high_booker, cluster["node1"][:1], priority="high")  # moves the victim, which had not begun

    history = history_of(page_client(owner, zone="Asia/Tokyo").get(f"/bookings/{victim.pk}/"))

    # 10:00-12:00 UTC is 19:00-21:00 in Tokyo.
    assert "It is moved to Mon 7 Jan 2030, 19:00–21:00 (Asia/Tokyo) on node1/gpu1." in history
    assert "UTC" not in history
