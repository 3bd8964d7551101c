import pytest

from reservations.models import AuditEntry, Notice

from ..support import book, client_for

pytestmark = pytest.mark.usefixtures("frozen")


def cancel(user, reservation, reason="no longer needed"):
    return client_for(user).post(f"/api/v1/reservations/{reservation.pk}/cancel/", {"reason": reason}, format="json")


def transfer(user, reservation, to, reason="handing over"):
    return client_for(user).post(
        f"/api/v1/reservations/{reservation.pk}/transfer/", {"to": to, "reason": reason}, format="json"
    )


@pytest.mark.parametrize("who", ["owner", "team_admin", "staff"])
def test_the_owner_a_team_admin_and_staff_may_cancel(request, cluster, owner, who):
    reservation = book(owner, cluster["node1"][:2])
    actor = request.getfixturevalue(who)

    response = cancel(actor, reservation)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert not reservation.allocations.filter(live=True).exists()
    entry = AuditEntry.objects.get(action="cancel", reservation=reservation)
    assert (entry.actor, entry.reason) == (actor, "no longer needed")
    assert entry.before["status"] == "confirmed" and entry.after["status"] == "cancelled"


@pytest.mark.parametrize("who", ["teammate", "outsider"])
def test_a_teammate_or_an_outsider_may_not_cancel(request, cluster, owner, who):
    reservation = book(owner, cluster["node1"][:1])

    response = cancel(request.getfixturevalue(who), reservation)

    assert response.status_code == 403
    reservation.refresh_from_db()
    assert reservation.status == "confirmed"
    assert not AuditEntry.objects.filter(action="cancel").exists()


def test_cancelling_frees_the_gpus_for_a_new_booking(cluster, owner, outsider):
    reservation = book(owner, cluster["node1"][:1])
    cancel(owner, reservation)

    again = book(outsider, cluster["node1"][:1])

    assert again.status == "confirmed"


def test_cancelling_someone_elses_booking_needs_a_reason_and_tells_the_owner(cluster, owner, team_admin):
    reservation = book(owner, cluster["node1"][:1])

    without = cancel(team_admin, reservation, reason="")
    with_reason = cancel(team_admin, reservation, reason="node maintenance")

    assert without.status_code == 400 and "reason" in without.json()
    assert with_reason.status_code == 200
    notice = Notice.objects.get(user=owner, kind=Notice.Kind.CANCELLED)
    assert "node maintenance" in notice.message


def test_a_cancelled_booking_cannot_be_cancelled_again(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])
    cancel(owner, reservation)

    response = cancel(owner, reservation)

    assert response.status_code == 400
    assert "cancelled" in response.json()["non_field_errors"][0]
    assert AuditEntry.objects.filter(action="cancel").count() == 1


def test_cancel_of_an_unknown_reservation_is_404(api, cluster):
    assert api.post("/api/v1/reservations/999999/cancel/", {}, format="json").status_code == 404


def test_the_owner_may_transfer_to_a_teammate(cluster, owner, teammate):
    reservation = book(owner, cluster["node1"][:2])

    response = transfer(owner, reservation, "teammate")

    assert response.status_code == 200, response.content
    assert response.json()["user"] == "teammate"
    assert response.json()["gpus"] == [g.pk for g in cluster["node1"][:2]]
    entry = AuditEntry.objects.get(action="transfer")
    assert (entry.before["user"], entry.after["user"], entry.actor) == ("owner", "teammate", owner)
    assert Notice.objects.filter(user=teammate, kind=Notice.Kind.TRANSFERRED).exists()


def test_a_transfer_to_someone_outside_the_team_is_a_400_naming_to(cluster, owner, outsider):
    reservation = book(owner, cluster["node1"][:2])

    response = transfer(owner, reservation, "outsider")

    assert response.status_code == 400
    assert "not in team vision" in response.json()["to"][0]
    reservation.refresh_from_db()
    assert reservation.user == owner
    assert not AuditEntry.objects.filter(action="transfer").exists()


def test_a_high_booking_may_not_pass_to_a_teammate_who_may_not_book_high(cluster, high_booker, teammate):
    reservation = book(high_booker, cluster["node1"][:1], priority="high")

    response = transfer(high_booker, reservation, "teammate")

    assert response.status_code == 400
    assert "may not book high priority" in response.json()["to"][0]
    reservation.refresh_from_db()
    assert reservation.user == high_booker


def test_staff_may_transfer_outside_the_team(cluster, owner, outsider, staff):
    reservation = book(owner, cluster["node1"][:1])

    response = transfer(staff, reservation, "outsider")

    assert response.status_code == 200, response.content
    assert response.json()["user"] == "outsider"


def test_a_teammate_may_not_transfer(cluster, owner, teammate):
    reservation = book(owner, cluster["node1"][:1])

    assert transfer(teammate, reservation, "teammate").status_code == 403
    reservation.refresh_from_db()
    assert reservation.user == owner


@pytest.mark.parametrize(
    "body, field",
    [({"to": "nobody"}, "to"), ({"to": "owner"}, "to"), ({}, "to"), ({"to": "outsider", "extra": 1}, "extra")],
)
def test_a_bad_transfer_is_a_400_with_the_field(api, cluster, owner, outsider, body, field):
    reservation = book(owner, cluster["node1"][:1])

    response = api.post(f"/api/v1/reservations/{reservation.pk}/transfer/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not AuditEntry.objects.filter(action="transfer").exists()
