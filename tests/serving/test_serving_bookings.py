"""Serving bookings through the API: what `serve` accepts, what it refuses, and who sees it."""

import pytest

from reservations.models import Reservation
from serving.models import Serving

from ..support import NEXT_SLOT, client_for, iso

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]
URL = "/api/v1/reservations/"


def serve(**overrides):
    return {"models": ["defects"], **overrides}


def post(client, gpu, **body):
    return client.post(URL, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1, **body}, format="json")


def test_a_booking_carries_models_to_serve_with_the_defaults_filled_in(api, cluster, owner, defects):
    response = post(api, cluster["node1"][0], serve=serve(models=["defects:1"], preload=["defects:1"]))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["job"] is None
    assert body["serve"]["status"] == "queued" and body["serve"]["replicas"] == []
    assert body["serve"]["spec"] == {
        "models": ["defects:1"], "preload": ["defects:1"], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None
    }
    assert Serving.objects.get(reservation_id=body["id"]).status == "queued"


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"serve": serve(models=["people"])}, "serve", "no model 'people'"),
        ({"serve": serve(models=["defects:7"])}, "serve", "has no version 7"),
        ({"serve": serve(models=["Defects!"])}, "models", "Name models as name or name:version"),
        ({"serve": serve(models=["defects", "defects:1"])}, "models", "Name each model once"),
        ({"serve": serve(preload=["other"])}, "preload", "Preload only models named in models"),
        ({"serve": serve(models=[])}, "models", ""),
        ({"serve": serve(max_batch=0)}, "max_batch", ""),
        ({"serve": serve(max_delay_ms=5000)}, "max_delay_ms", ""),
        ({"serve": serve(memory_budget_mb=0)}, "memory_budget_mb", ""),
        ({"serve": serve(warm=True)}, "warm", "Unknown field"),
        ({"serve": "defects"}, "serve", ""),
        (
            {"serve": serve(), "job": {"model": "yolov8n.yaml", "data": "/nowhere/data.yaml"}},
            None, "",
        ),
    ],
)
def test_a_bad_serve_is_a_400_naming_the_field_and_nothing_is_booked(api, cluster, owner, defects, body, field, words):
    response = post(api, cluster["node1"][0], **body)

    assert response.status_code == 400, response.content
    text = response.content.decode()
    if field is not None:
        assert f'"{field}"' in text and words in text
    assert not Reservation.objects.exists() and not Serving.objects.exists()


def test_job_and_serve_together_are_refused(api, cluster, owner, defects, training_data):
    response = post(
        api, cluster["node1"][0], serve=serve(),
        job={"model": "yolov8n.yaml", "data": str(training_data), "epochs": 1, "imgsz": 64},
    )

    assert response.status_code == 400
    assert "not both" in response.content.decode()


def test_another_teams_models_cannot_be_served(cluster, outsider, defects):
    response = post(client_for(outsider), cluster["node1"][0], serve=serve())

    assert response.status_code == 400
    assert "no model 'defects'" in response.content.decode()


def test_what_a_booking_serves_is_shown_to_its_team_only(api, cluster, owner, teammate, outsider, defects):
    booked = post(api, cluster["node1"][0], serve=serve()).json()

    seen = {who: client_for(who).get(f"{URL}{booked['id']}/").json()["serve"] for who in (teammate, outsider)}
    assert seen[teammate]["spec"]["models"] == ["defects"]
    assert seen[outsider] is None


def test_cancelling_a_serving_booking_before_its_slot_stops_its_serving(api, cluster, owner, defects):
    booked = post(api, cluster["node1"][0], serve=serve()).json()

    assert api.post(f"{URL}{booked['id']}/cancel/", {}, format="json").status_code == 200
    serving = Serving.objects.get(reservation_id=booked["id"])
    assert serving.status == "stopped" and serving.ended_at is not None
