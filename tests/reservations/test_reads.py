"""Inventory, listing with filters, availability, status board, schema and docs."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from ..support import NEXT_SLOT, SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")


def test_gpus_and_nodes_are_listed_with_their_contract_fields(api, cluster):
    gpus = api.get("/api/v1/gpus/").json()
    nodes = api.get("/api/v1/nodes/").json()

    assert gpus["count"] == 8
    assert gpus["results"][0] == {
        "id": cluster["node1"][0].pk, "name": "node1/gpu0", "node": cluster["node1"][0].node_id,
        "index": 0, "model": "A100", "memory_mb": 81920, "healthy": True,
    }
    assert [n["hostname"] for n in nodes["results"]] == ["node1", "node2"]
    assert nodes["results"][0]["gpus"] == [g.pk for g in cluster["node1"]]
    assert set(nodes["results"][0]) == {"id", "hostname", "online", "last_heartbeat", "gpus"}


def test_reservations_are_filtered_by_overlap_gpu_user_team_and_status(api, cluster, owner, outsider):
    early = book(owner, cluster["node1"][:1], start=NEXT_SLOT)
    late = book(outsider, cluster["node1"][1:2], start=NEXT_SLOT + 3 * SLOT)

    def ids(**params):
        return [r["id"] for r in api.get("/api/v1/reservations/", params).json()["results"]]

    assert ids() == [early.pk, late.pk]
    assert ids(start=iso(NEXT_SLOT + SLOT), end=iso(NEXT_SLOT + 4 * SLOT)) == [late.pk]
    assert ids(start=iso(NEXT_SLOT), end=iso(NEXT_SLOT + SLOT)) == [early.pk]
    assert ids(gpu=cluster["node1"][1].pk) == [late.pk]
    assert ids(user="owner") == [early.pk]
    assert ids(team="nlp") == [late.pk]
    assert ids(status="cancelled") == []


@pytest.mark.parametrize(
    "params, field",
    [({"start": "2030-01-07T10:00:00"}, "start"), ({"end": "yesterday"}, "end"), ({"status": "gone"}, "status")],
)
def test_bad_list_filters_are_a_400_with_the_field(api, cluster, params, field):
    response = api.get("/api/v1/reservations/", params)

    assert response.status_code == 400
    assert field in response.json()


def test_lists_are_paginated_up_to_500(api, cluster, owner):
    for i in range(3):
        book(owner, cluster["node1"][:1], start=NEXT_SLOT + i * SLOT)

    page = api.get("/api/v1/reservations/", {"page_size": 2}).json()
    capped = api.get("/api/v1/reservations/", {"page_size": 100000}).json()

    assert (page["count"], len(page["results"])) == (3, 2) and page["next"]
    assert len(capped["results"]) == 3


def test_availability_lists_the_nearest_windows_first(api, cluster, owner):
    book(owner, cluster["node1"] + cluster["node2"][:2], start=NEXT_SLOT)

    windows = api.get("/api/v1/availability/", {"gpu_count": 4, "slots": 1}).json()["windows"]

    assert len(windows) == 5
    assert windows[0] == {
        "gpus": [g.pk for g in cluster["node1"]], "start": iso(NEXT_SLOT + SLOT), "end": iso(NEXT_SLOT + 2 * SLOT)
    }
    assert [w["start"] for w in windows] == sorted(w["start"] for w in windows)


def test_availability_honours_after_and_model(api, cluster):
    after = api.get("/api/v1/availability/", {"after": iso(NEXT_SLOT + 5 * SLOT)}).json()["windows"]
    other_model = api.get("/api/v1/availability/", {"gpu_model": "H100"}).json()["windows"]

    assert after[0]["start"] == iso(NEXT_SLOT + 5 * SLOT)
    assert other_model == []


@pytest.mark.parametrize("params, field", [({"gpu_count": 0}, "gpu_count"), ({"after": "2030-01-07T10:00:00"}, "after"), ({"slots": "x"}, "slots")])
def test_bad_availability_queries_are_a_400_with_the_field(api, cluster, params, field):
    response = api.get("/api/v1/availability/", params)

    assert response.status_code == 400 and field in response.json()


def test_the_status_board_shows_current_and_upcoming_per_gpu(api, cluster, owner, frozen):
    now_booking = book(owner, cluster["node1"][:1], start=NEXT_SLOT)
    next_booking = book(owner, cluster["node1"][:1], start=NEXT_SLOT + 2 * SLOT)
    frozen.move_to(NEXT_SLOT + SLOT / 2)

    board = {row["name"]: row for row in api.get("/api/v1/status/").json()}

    assert board["node1/gpu0"]["current"]["id"] == now_booking.pk
    assert [r["id"] for r in board["node1/gpu0"]["upcoming"]] == [next_booking.pk]
    assert board["node1/gpu1"] == {"gpu": cluster["node1"][1].pk, "name": "node1/gpu1", "current": None, "upcoming": []}


def test_notices_are_private_to_their_user(cluster, owner, team_admin, outsider):
    reservation = book(owner, cluster["node1"][:1])
    client_for(team_admin).post(f"/api/v1/reservations/{reservation.pk}/cancel/", {"reason": "maintenance"}, format="json")

    assert client_for(owner).get("/api/v1/notices/").json()["count"] == 1
    assert client_for(outsider).get("/api/v1/notices/").json()["count"] == 0


def test_the_schema_and_swagger_ui_are_served_with_local_assets(api, cluster):
    schema = api.get("/api/schema/")
    docs = api.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/v1/reservations/" in schema.content
    html = docs.content.decode()
    assert docs.status_code == 200
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


def test_session_auth_enforces_csrf(cluster, owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(
        "/api/v1/reservations/", {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_schema_generates_without_warnings_and_documents_preemption_fields(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    schema = (tmp_path / "schema.yaml").read_text()
    assert "reclaim_at" in schema and "auto_rebook" in schema and "rebook_of" in schema
