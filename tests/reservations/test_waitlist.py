import pytest

from reservations import services
from reservations.models import AuditEntry, Notice, Reservation

from ..support import NEXT_SLOT, SLOT, book, client_for, iso

pytestmark = [pytest.mark.usefixtures("frozen"), pytest.mark.django_db(transaction=True)]


def test_a_conflicting_request_with_waitlist_is_stored_waitlisted(api, cluster, teammate):
    gpu = cluster["node1"][0]
    book(teammate, [gpu])

    response = api.post(
        "/api/v1/reservations/", {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1, "waitlist": True}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "waitlisted"
    assert response.json()["gpus"] == [gpu.pk]
    assert AuditEntry.objects.filter(action="waitlist", reservation_id=response.json()["id"]).count() == 1


def test_a_free_request_with_waitlist_is_simply_confirmed(api, cluster):
    response = api.post(
        "/api/v1/reservations/",
        {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "waitlist": True},
        format="json",
    )

    assert response.json()["status"] == "confirmed"


def test_cancelling_the_holder_promotes_the_waitlisted_booking_with_a_notice(cluster, owner, teammate):
    gpu = cluster["node1"][0]
    holder = book(teammate, [gpu])
    waiting = book(owner, [gpu], waitlist=True)

    client_for(teammate).post(f"/api/v1/reservations/{holder.pk}/cancel/", {"reason": "not needed"}, format="json")

    waiting.refresh_from_db()
    assert waiting.status == Reservation.Status.CONFIRMED
    assert waiting.allocations.get().live is True
    promote = AuditEntry.objects.get(action="promote", reservation=waiting)
    assert promote.before["status"] == "waitlisted" and promote.after["status"] == "confirmed"
    notice = Notice.objects.get(user=owner, kind=Notice.Kind.WAITLIST_CONFIRMED)
    assert notice.reservation == waiting
    assert client_for(owner).get("/api/v1/notices/").json()["results"][0]["kind"] == "waitlist_confirmed"


def test_the_oldest_waitlisted_request_wins_the_freed_window(cluster, owner, teammate, team_admin):
    gpu = cluster["node1"][0]
    holder = book(team_admin, [gpu])
    first = book(owner, [gpu], waitlist=True)
    second = book(teammate, [gpu], waitlist=True)

    services.reservation_cancel(reservation_id=holder.pk, actor=team_admin)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("confirmed", "waitlisted")


def test_a_waitlisted_gpu_count_request_gets_gpus_when_promoted(cluster, owner, teammate):
    everything = book(teammate, cluster["node1"] + cluster["node2"])
    waiting = services.reservation_create(user=owner, gpu_count=3, start=NEXT_SLOT, slots=1, waitlist=True)
    assert waiting.status == "waitlisted" and not waiting.allocations.exists()

    services.reservation_cancel(reservation_id=everything.pk, actor=teammate)

    waiting.refresh_from_db()
    assert waiting.status == "confirmed"
    assert waiting.allocations.filter(live=True).count() == 3


def test_a_waitlisted_booking_stays_waiting_while_its_window_is_still_taken(cluster, owner, teammate):
    gpu = cluster["node1"][0]
    book(teammate, [gpu], slots=2)
    elsewhere = book(teammate, [cluster["node1"][1]])
    waiting = book(owner, [gpu], waitlist=True)

    services.reservation_cancel(reservation_id=elsewhere.pk, actor=teammate)

    waiting.refresh_from_db()
    assert waiting.status == "waitlisted"


def test_a_waitlisted_booking_whose_window_passed_expires_with_a_notice(cluster, owner, teammate, frozen):
    gpu = cluster["node1"][0]
    book(teammate, [gpu])
    waiting = book(owner, [gpu], waitlist=True)
    frozen.move_to(NEXT_SLOT + SLOT)

    services.waitlist_promote()

    waiting.refresh_from_db()
    assert waiting.status == "cancelled"
    assert AuditEntry.objects.filter(action="expire", reservation=waiting).exists()
    assert Notice.objects.filter(user=owner, kind=Notice.Kind.WAITLIST_EXPIRED).exists()
