import base64
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction

from reservations.models import AuditEntry

from ..support import NEXT_SLOT, book, client_for

pytestmark = pytest.mark.usefixtures("frozen")


def test_staff_can_read_and_filter_the_audit_log(cluster, owner, staff, team_admin):
    first = book(owner, cluster["node1"][:1])
    book(owner, cluster["node1"][1:2])
    client_for(team_admin).post(f"/api/v1/reservations/{first.pk}/cancel/", {"reason": "maintenance"}, format="json")
    client = client_for(staff)

    everything = client.get("/api/v1/audit/").json()
    cancels = client.get("/api/v1/audit/", {"action": "cancel"}).json()
    by_actor = client.get("/api/v1/audit/", {"actor": "teamadmin"}).json()
    by_reservation = client.get("/api/v1/audit/", {"reservation": first.pk}).json()

    assert [e["action"] for e in everything["results"]] == ["cancel", "create", "create"]
    assert [e["action"] for e in cancels["results"]] == ["cancel"]
    assert cancels["results"][0]["reason"] == "maintenance"
    assert [e["actor"] for e in by_actor["results"]] == ["teamadmin"]
    assert [e["action"] for e in by_reservation["results"]] == ["cancel", "create"]


def test_the_audit_log_is_read_in_keyset_pages_newest_first_without_a_count(cluster, owner, staff, frozen):
    """Each page continues from the last one's position (an index range, however deep), and nothing
    counts the whole log: years of entries cost the same as a day's."""
    for hour in range(7):
        frozen.shift(3600)
        book(owner, cluster["node1"][hour % 4:hour % 4 + 1], start=NEXT_SLOT + timedelta(hours=2 * hour + 24))
    client = client_for(staff)

    pages, url = [], "/api/v1/audit/?page_size=3"
    while url:
        body = client.get(url).json()
        assert "count" not in body
        pages.append([e["id"] for e in body["results"]])
        url = body["next"]

    newest_first = list(AuditEntry.objects.order_by("-created", "-id").values_list("id", flat=True))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sum(pages, []) == newest_first
    previous = client.get(client.get("/api/v1/audit/?page_size=3").json()["next"]).json()["previous"]
    assert [e["id"] for e in client.get(previous).json()["results"]] == pages[0]


@pytest.mark.parametrize("cursor", [base64.b64encode(b"o=x").decode(), base64.b64encode(b"p=not-a-time").decode(),
                                    base64.b64encode(b"p=9999-99-99T99:99").decode()])
def test_a_forged_cursor_is_a_404_naming_the_cursor_not_a_500(cluster, owner, staff, cursor):
    book(owner, cluster["node1"][:1])

    response = client_for(staff).get("/api/v1/audit/", {"cursor": cursor})

    assert response.status_code == 404
    assert "cursor" in response.json()["detail"].lower()


def test_the_audit_log_is_staff_only(cluster, owner):
    assert client_for(owner).get("/api/v1/audit/").status_code == 403


def test_a_naive_since_filter_is_a_400(staff):
    response = client_for(staff).get("/api/v1/audit/", {"since": "2030-01-01T00:00:00"})

    assert response.status_code == 400
    assert "since" in response.json()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_nobody_can_write_the_audit_log_through_the_api(cluster, owner, staff, method):
    book(owner, cluster["node1"][:1])
    entry = AuditEntry.objects.get()
    client = client_for(staff)

    url = "/api/v1/audit/" if method == "post" else f"/api/v1/audit/{entry.pk}/"
    response = getattr(client, method)(url, {"reason": "rewritten"}, format="json")

    assert response.status_code == 405
    entry.refresh_from_db()
    assert entry.reason == ""


def test_the_model_refuses_to_update_or_delete_an_entry(cluster, owner):
    book(owner, cluster["node1"][:1])
    entry = AuditEntry.objects.get()

    entry.reason = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()


@pytest.mark.postgres
def test_postgresql_refuses_update_and_delete_even_in_raw_sql(cluster, owner):
    book(owner, cluster["node1"][:1])

    for statement in ("UPDATE reservations_auditentry SET reason = 'x'", "DELETE FROM reservations_auditentry"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEntry.objects.get().reason == ""


def test_a_failed_booking_leaves_no_audit_entry(api, cluster, teammate):
    book(teammate, cluster["node1"][:1])

    api.post("/api/v1/reservations/", {"gpus": [cluster["node1"][0].pk], "start": "2030-01-07T10:00:00Z", "slots": 1}, format="json")

    assert list(AuditEntry.objects.values_list("actor__username", flat=True)) == ["teammate"]


@pytest.mark.parametrize("position", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2030-01-07 10:00:00"])
def test_a_cursor_at_no_moment_a_database_holds_or_without_a_zone_is_a_404(cluster, owner, staff, position):
    book(owner, cluster["node1"][:1])
    cursor = base64.b64encode(f"p={position}".encode()).decode()

    response = client_for(staff).get("/api/v1/audit/", {"cursor": cursor})

    assert response.status_code == 404
