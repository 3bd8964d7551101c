import re

import pytest

from reservations import services
from reservations.models import AuditEntry, Reservation

from ..support import NEXT_SLOT, SLOT, book

pytestmark = pytest.mark.usefixtures("frozen")


def add_form(owner, team, gpus, **extra):
    return {
        "user": owner.pk, "team": team.pk, "title": "from admin", "gpus": [g.pk for g in gpus],
        "start_0": NEXT_SLOT.strftime("%Y-%m-%d"), "start_1": NEXT_SLOT.strftime("%H:%M:%S"),
        "slots": 2, "priority": "normal", **extra,
    }


def test_an_admin_booking_goes_through_the_rules_and_is_audited_with_the_admin_as_actor(admin_client, cluster, owner, team):
    response = admin_client.post("/admin/reservations/reservation/add/", add_form(owner, team, cluster["node1"][:2]))

    assert response.status_code == 302, response.content.decode()[:2000]
    reservation = Reservation.objects.get()
    assert (reservation.user, reservation.slots, reservation.status) == (owner, 2, "confirmed")
    assert sorted(reservation.allocations.values_list("gpu_id", flat=True)) == [g.pk for g in cluster["node1"][:2]]
    entry = AuditEntry.objects.get(action="create")
    assert entry.actor == admin_client.user


def test_an_admin_booking_that_conflicts_shows_the_error_and_writes_nothing(admin_client, cluster, owner, team, teammate):
    taken = book(teammate, cluster["node1"][:1])

    response = admin_client.post("/admin/reservations/reservation/add/", add_form(owner, team, cluster["node1"][:2]))

    assert response.status_code == 200
    assert f"Conflicting reservations: [{taken.pk}]" in response.content.decode()
    assert Reservation.objects.count() == 1


def test_an_admin_booking_on_an_unaligned_start_shows_the_field_error(admin_client, cluster, owner, team):
    form = add_form(owner, team, cluster["node1"][:1], start_1="11:00:00")

    response = admin_client.post("/admin/reservations/reservation/add/", form)

    assert response.status_code == 200
    assert "slot boundary" in response.content.decode()
    assert not Reservation.objects.exists()


def change_form(reservation, **extra):
    return {
        "title": reservation.title, "priority": reservation.priority,
        "start_0": reservation.start.strftime("%Y-%m-%d"), "start_1": reservation.start.strftime("%H:%M:%S"),
        "slots": reservation.slots, "reason": "", **extra,
    }


def test_an_admin_edit_is_audited_with_before_and_after(admin_client, cluster, owner):
    reservation = book(owner, cluster["node1"][:1], title="old")

    response = admin_client.post(
        f"/admin/reservations/reservation/{reservation.pk}/change/", change_form(reservation, title="new", reason="typo")
    )

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="update")
    assert (entry.before["title"], entry.after["title"], entry.reason) == ("old", "new", "typo")


def test_an_admin_move_is_checked_for_conflicts_and_audited(admin_client, cluster, owner, teammate):
    reservation = book(owner, cluster["node1"][:1])
    book(teammate, cluster["node1"][:1], start=NEXT_SLOT + 2 * SLOT)
    later = NEXT_SLOT + SLOT

    refused = admin_client.post(
        f"/admin/reservations/reservation/{reservation.pk}/change/", change_form(reservation, slots=3)
    )
    moved = admin_client.post(
        f"/admin/reservations/reservation/{reservation.pk}/change/",
        change_form(reservation, start_1=later.strftime("%H:%M:%S"), reason="shift"),
    )

    assert refused.status_code == 200 and "already booked" in refused.content.decode()
    assert moved.status_code == 302
    reservation.refresh_from_db()
    assert reservation.start == later
    assert reservation.allocations.get().start == later
    assert AuditEntry.objects.get(action="move").reason == "shift"


def test_reservations_cannot_be_deleted_in_the_admin(admin_client, cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    response = admin_client.post(f"/admin/reservations/reservation/{reservation.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Reservation.objects.filter(pk=reservation.pk).exists()


def test_the_cancel_action_cancels_through_the_service(admin_client, cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    admin_client.post(
        "/admin/reservations/reservation/", {"action": "cancel_selected", "_selected_action": [reservation.pk]}
    )

    reservation.refresh_from_db()
    assert reservation.status == "cancelled"
    assert AuditEntry.objects.get(action="cancel").actor == admin_client.user


def test_the_audit_log_admin_filters_by_action_and_searches_the_reason(admin_client, cluster, owner, team_admin):
    kept = book(owner, cluster["node1"][:1])
    dropped = book(owner, cluster["node1"][1:2])
    services.reservation_cancel(reservation_id=dropped.pk, actor=team_admin, reason="rack maintenance")

    cancels = admin_client.get("/admin/reservations/auditentry/", {"action__exact": "cancel"}).context["cl"]
    found = admin_client.get("/admin/reservations/auditentry/", {"q": "maintenance"}).context["cl"]

    assert [e.reservation_id for e in cancels.result_list] == [dropped.pk]
    assert [e.reason for e in found.result_list] == ["rack maintenance"]
    assert kept.pk not in {e.reservation_id for e in found.result_list}


def test_the_audit_log_admin_is_read_only_even_for_a_superuser(admin_client, cluster, owner):
    book(owner, cluster["node1"][:1])
    entry = AuditEntry.objects.get()

    listing = admin_client.get("/admin/reservations/auditentry/", {"action__exact": "create"})
    detail = admin_client.get(f"/admin/reservations/auditentry/{entry.pk}/change/")
    edit = admin_client.post(f"/admin/reservations/auditentry/{entry.pk}/change/", {"reason": "rewritten"})
    delete = admin_client.post(f"/admin/reservations/auditentry/{entry.pk}/delete/", {"post": "yes"})
    add = admin_client.get("/admin/reservations/auditentry/add/")

    assert listing.status_code == 200 and "Created" in listing.content.decode()
    assert detail.status_code == 200  # viewable...
    assert 'name="reason"' not in detail.content.decode()  # ...but not as a form
    assert (edit.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    entry.refresh_from_db()
    assert entry.reason == ""


def test_an_inventory_edit_in_the_admin_is_audited(admin_client, cluster):
    gpu = cluster["node1"][0]

    response = admin_client.post(
        f"/admin/reservations/gpu/{gpu.pk}/change/",
        {"node": gpu.node_id, "index": 0, "model": "A100", "memory_mb": 81920, "uuid": gpu.uuid, "healthy": ""},
    )

    assert response.status_code == 302
    entry = AuditEntry.objects.get(target=f"gpu:{gpu.pk}")
    assert (entry.action, entry.actor) == ("update", admin_client.user)
    assert (entry.before["healthy"], entry.after["healthy"]) == (True, False)


def test_the_team_admin_names_each_member_beside_their_id_with_a_link_to_them(admin_client, team, owner, teammate):
    page = admin_client.get(f"/admin/reservations/team/{team.pk}/change/").content.decode()

    for user in (owner, teammate):
        assert re.search(rf'<a href="/admin/auth/user/{user.pk}/change/">\s*{user.username}\s*</a>', page), user


def test_a_membership_added_in_the_team_admin_is_audited(admin_client, team, outsider):
    response = admin_client.post(
        f"/admin/reservations/team/{team.pk}/change/",
        {
            "name": team.name, "slug": team.slug, "colour": team.colour,
            "memberships-TOTAL_FORMS": 1, "memberships-INITIAL_FORMS": 0,
            "memberships-MIN_NUM_FORMS": 0, "memberships-MAX_NUM_FORMS": 1000,
            "memberships-0-user": outsider.pk, "memberships-0-role": "admin", "memberships-0-team": team.pk,
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEntry.objects.get(target__startswith="membership:")
    assert (entry.action, entry.after["user"], entry.after["role"]) == ("create", outsider.pk, "admin")


def test_an_admin_high_booking_preempts_like_the_api_with_the_admin_as_actor(admin_client, cluster, owner, team, high_booker):
    victim = book(owner, cluster["node1"][:1], priority="low")

    response = admin_client.post(
        "/admin/reservations/reservation/add/",
        add_form(high_booker, team, cluster["node1"][:1], priority="high", slots=1, auto_rebook="on"),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    victim.refresh_from_db()
    assert victim.allocations.get().gpu_id == cluster["node1"][1].pk
    assert AuditEntry.objects.get(action="move", reservation=victim).actor == admin_client.user


def test_an_admin_booking_refused_preemption_says_why(admin_client, cluster, owner, team, high_booker):
    book(owner, cluster["node1"][:1], priority="low", preemptible=False)

    response = admin_client.post(
        "/admin/reservations/reservation/add/", add_form(high_booker, team, cluster["node1"][:1], priority="high")
    )

    assert response.status_code == 200
    assert "cannot be preempted" in response.content.decode() and "is not preemptible" in response.content.decode()


@pytest.mark.parametrize("model", ["reservation", "notice", "auditentry"])
def test_the_lists_of_history_tables_offer_no_counts_per_filter_choice(admin_client, model):
    """Django's "Show counts" counts every row for each choice of each filter: years of bookings,
    notices or audit entries; these lists offer no such link, and ?_facets is ignored."""
    url = f"/admin/reservations/{model}/"

    page = admin_client.get(url).content.decode()
    asked = admin_client.get(url, {"_facets": "True"}).content.decode()

    assert "Show counts" not in page
    assert not re.search(r"\(\d+\)</a>", asked)
