"""A job booked on a node that is offline: accepted (the node may be back in time), but the person
booking is told at once, in the response and a notice, and again at the slot's start if the node is
still away."""

import pytest

from reservations.models import Node, Notice
from trainer import services

from ..support import NEXT_SLOT, SLOT, iso

pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def spec(tmp_path, settings):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "data.yaml").write_text("path: .\n")
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    return {"model": "yolov8n.yaml", "data": str(tmp_path / "data" / "data.yaml"), "epochs": 2}


def book_job(api, gpu, spec):
    return api.post(
        "/api/v1/reservations/", {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1, "job": spec}, format="json"
    )


def test_a_job_on_an_offline_node_is_booked_with_a_warning_and_a_notice(api, cluster, owner, spec):
    Node.objects.filter(hostname="node1").update(online=False)

    response = book_job(api, cluster["node1"][0], spec)

    assert response.status_code == 201, response.content
    [warning] = response.json()["warnings"]
    assert "node1 is offline" in warning
    notice = Notice.objects.get(user=owner, kind=Notice.Kind.NODE_OFFLINE)
    assert notice.message == warning and notice.data["at"] == "booking"
    assert api.get("/api/v1/notices/").json()["results"][0]["kind"] == "node_offline"


def test_a_job_on_an_online_node_has_no_warning(api, cluster, owner, spec):
    response = book_job(api, cluster["node1"][0], spec)

    assert response.status_code == 201 and response.json()["warnings"] == []
    assert not Notice.objects.filter(kind=Notice.Kind.NODE_OFFLINE).exists()


def test_the_owner_is_told_once_at_slot_start_while_the_node_is_still_away(api, cluster, owner, spec, frozen):
    Node.objects.filter(hostname="node1").update(online=False)
    reservation_id = book_job(api, cluster["node1"][0], spec).json()["id"]

    assert services.node_away_notices(now=NEXT_SLOT - SLOT / 4) == 0  # not begun yet
    assert services.node_away_notices(now=NEXT_SLOT) == 1
    assert services.node_away_notices(now=NEXT_SLOT + SLOT / 4) == 0  # once

    at_start = Notice.objects.get(kind=Notice.Kind.NODE_OFFLINE, data__at="slot_start")
    assert at_start.reservation_id == reservation_id and "still offline" in at_start.message


def test_no_slot_start_notice_when_the_node_is_back(api, cluster, owner, spec):
    Node.objects.filter(hostname="node1").update(online=False)
    book_job(api, cluster["node1"][0], spec)
    Node.objects.filter(hostname="node1").update(online=True)

    assert services.node_away_notices(now=NEXT_SLOT) == 0


def test_a_booking_from_now_on_an_offline_node_is_told_once(api, cluster, owner, spec):
    Node.objects.filter(hostname="node1").update(online=False)

    response = api.post(
        "/api/v1/reservations/", {"gpus": [cluster["node1"][0].pk], "start": "now", "slots": 1, "job": spec}, format="json"
    )
    services.node_away_notices(now=NEXT_SLOT - SLOT / 4)

    assert response.status_code == 201 and response.json()["warnings"]
    assert Notice.objects.filter(kind=Notice.Kind.NODE_OFFLINE).count() == 1
