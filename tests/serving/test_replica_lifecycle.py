"""Serving bookings with real components: a node worker (its agent supervises the replicas), real
replica processes loading real YOLO weights on CPU devices, Redis and PostgreSQL. A replica starts
on each booked device at the slot start and is drained at the booking's end and when preempted."""

import os
import shutil
import signal
from datetime import timedelta
from io import BytesIO

import pytest
import requests
from django.db import transaction
from django.utils import timezone
from PIL import Image

from reservations import policy
from reservations.models import GPU, Allocation, AuditEntry, Reservation
from serving.models import Model, ModelVersion, Replica, Serving
from serving.services import serving_create
from serving.signing import ReplicaClient
from trainer.runner import sha256_of

from ..support import client_for, iso, make_user, wait_for
from ..workers import NodeWorker, purge_central_queue

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
HOST = "serving-node"


@pytest.fixture
def model_store(tmp_path, settings, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    settings.MODEL_STORE = store
    monkeypatch.setenv("MODEL_STORE", str(store))
    return store


def register(team, name, weights, store):
    """A model version as the registry keeps it: the weights under their hash in the store."""
    sha = sha256_of(weights)
    shutil.copyfile(weights, store / f"{sha}.pt")
    model, _ = Model.objects.get_or_create(team=team, name=name)
    return ModelVersion.objects.create(
        model=model, version=model.versions.count() + 1, imgsz=64, class_names=["square", "bar"],
        size=weights.stat().st_size, sha256=sha,
    )


def picture():
    buffer = BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def serving_now(user, team, gpus, spec, *, starts_in, length):
    """A serving booking whose window starts in `starts_in` (not on a slot boundary, so the test need
    not wait for one): made directly, as the supervisor only reads start and end."""
    start = timezone.now() + starts_in
    reservation = Reservation.objects.create(
        user=user, team=team, start=start, end=start + length, gpu_count=len(gpus), status="confirmed"
    )
    for gpu in gpus:
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
    with transaction.atomic():  # as in the booking's transaction: it locks the models it names
        serving_create(reservation=reservation, spec=spec, now=timezone.now())
    return reservation, Serving.objects.get(reservation=reservation)


def replicas(serving):
    return list(Replica.objects.filter(serving=serving).order_by("gpu_id", "id"))


def test_a_serving_booking_starts_a_replica_per_device_at_its_start_serves_and_drains_at_its_end(
    tmp_path, team, model_store, yolo_weights
):
    owner = make_user("serving-owner", team)
    version = register(team, "defects", yolo_weights.best, model_store)
    worker = NodeWorker(tmp_path / "node.log", HOST, REPLICA_PORTS="9610-9619").start()
    try:
        gpus = list(GPU.objects.filter(node__hostname=HOST).order_by("index"))
        spec = {"models": ["defects"], "preload": [], "max_batch": 4, "max_delay_ms": 5, "memory_budget_mb": 256}
        reservation, serving = serving_now(owner, team, gpus, spec, starts_in=timedelta(seconds=3), length=timedelta(hours=1))

        ready = wait_for(
            lambda: len(r := [x for x in replicas(serving) if x.state == "ready"]) == 2 and r, 120, "two ready replicas"
        )
        assert {r.gpu_id for r in ready} == {g.pk for g in gpus}
        assert all(r.spawned_at >= reservation.start for r in ready)  # not before its slot
        assert len({r.address for r in ready}) == 2 and all(r.address.startswith("127.0.0.1:961") for r in ready)
        assert all(r.memory_budget == 256 << 20 and r.device == "cpu" and r.node.hostname == HOST for r in ready)
        serving.refresh_from_db()
        assert serving.status == "serving"
        assert [(m["name"], m["version"], m["sha256"]) for m in serving.resolved] == [("defects", 1, version.sha256)]

        # The replica answers signed requests only, with detections from the registered version.
        replica = ready[0]
        client = ReplicaClient(replica.address, replica.token)
        answer = client.post("/v1/models/defects/predict", body=picture(), content_type="image/png")
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert (body["model"], body["version"], body["sha256"], body["cache"]) == ("defects", 1, version.sha256, "miss")
        assert body["results"][0]["width"] == 64 and isinstance(body["results"][0]["detections"], list)
        assert ReplicaClient(replica.address, "not-the-token").get("/v1/status").status_code == 401
        # What it holds reaches the database, where a router finds it.
        resident = wait_for(
            lambda: (r := Replica.objects.get(pk=replica.pk).resident) and r, 30, "the resident model on record"
        )
        assert [(m["name"], m["version"]) for m in resident] == [("defects", 1)] and resident[0]["bytes"] > 0

        # Through the API (the token stays on the server): the team sees it and may ask it; operators
        # (owner, team admin, staff) load and unload; others find nothing.
        api = client_for(owner)
        listed = api.get("/api/v1/replicas/?state=ready").json()["results"]
        assert {r["id"] for r in listed} == {r.pk for r in ready} and "token" not in listed[0]
        status = api.get(f"/api/v1/replicas/{replica.pk}/status/").json()
        assert status["state"] == "ready" and status["models"][0]["name"] == "defects"
        proxied = api.post(
            f"/api/v1/replicas/{replica.pk}/models/defects:1/predict/", picture(), content_type="image/png"
        )
        assert proxied.status_code == 200 and proxied.json()["cache"] == "hit"
        teammate = client_for(make_user("serving-teammate", team))
        assert teammate.post(f"/api/v1/replicas/{replica.pk}/models/defects/unload/").status_code == 403
        assert teammate.get(f"/api/v1/replicas/{replica.pk}/status/").status_code == 200
        outsider = client_for(make_user("serving-outsider"))
        assert outsider.get(f"/api/v1/replicas/{replica.pk}/status/").status_code == 404
        assert api.post(f"/api/v1/replicas/{replica.pk}/models/Bad!/load/").status_code == 400
        unloaded = api.post(f"/api/v1/replicas/{replica.pk}/models/defects/unload/")
        assert unloaded.status_code == 200, unloaded.content
        assert wait_for(lambda: Replica.objects.get(pk=replica.pk).resident == [], 30, "the unload on record")
        loaded = api.post(f"/api/v1/replicas/{replica.pk}/models/defects/load/", b'{"pin": true}', content_type="application/json")
        assert loaded.status_code == 200, loaded.content
        pinned = wait_for(lambda: Replica.objects.get(pk=replica.pk).resident, 30, "the load on record")
        assert pinned[0]["pinned"] is True

        # The booking ends (released early): both replicas drain and stop, and so does the serving.
        Reservation.objects.filter(pk=reservation.pk).update(end=timezone.now())
        def all_stopped():
            found = replicas(serving)
            return all(r.state == "stopped" for r in found) and found

        stopped = wait_for(all_stopped, 90, "the replicas to drain")
        assert all("ended" in r.reason or "Drained" in r.reason for r in stopped), [r.reason for r in stopped]
        assert wait_for(lambda: Serving.objects.get(pk=serving.pk).status == "stopped", 30, "the serving to stop")
        assert not answers(client)  # its process is gone, its port closed
    finally:
        worker.stop()


def answers(client):
    try:
        client.get("/v1/status", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_a_preempted_serving_booking_is_warned_then_drained_at_the_reclaim_and_rebooked_to_serve_again(
    short_slots, tmp_path, team, high_booker, model_store, yolo_weights
):
    researcher = make_user("serving-researcher", team)
    register(team, "defects", yolo_weights.best, model_store)
    purge_central_queue()
    worker = NodeWorker(tmp_path / "node.log", HOST, central=True, REPLICA_PORTS="9620-9629").start()
    try:
        gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
        low = client_for(researcher).post(
            "/api/v1/reservations/",
            {"gpus": [gpu.pk], "start": "now", "slots": 10, "priority": "low", "serve": {"models": ["defects"]}},
            format="json",
        ).json()
        replica = wait_for(
            lambda: (r := Replica.objects.filter(serving__reservation_id=low["id"], state="ready").first()) and r,
            120, "the replica to be ready",
        )

        start = policy.ceil_to_slot(timezone.now() + policy.notice_length())
        response = client_for(high_booker).post(
            "/api/v1/reservations/", {"gpus": [gpu.pk], "start": iso(start), "slots": 1, "priority": "high"}, format="json"
        )
        assert response.status_code == 201, response.content
        notice = client_for(researcher).get("/api/v1/notices/").json()["results"][0]
        assert notice["kind"] == "preemption_warning" and notice["reservation"] == low["id"]

        # Warned, it keeps serving until the reclaim time; then it drains, not before.
        client = ReplicaClient(replica.address, replica.token)
        assert client.post("/v1/models/defects/predict", body=picture(), content_type="image/png").status_code == 200
        drained = wait_for(
            lambda: (r := Replica.objects.get(pk=replica.pk)).state == "stopped" and r, 180, "the replica to drain"
        )
        assert drained.ended_at >= start and "Preempted by reservation" in drained.reason
        assert Serving.objects.get(reservation_id=low["id"]).status == "stopped"
        assert Reservation.objects.get(pk=low["id"]).status == "preempted"
        assert AuditEntry.objects.filter(reservation_id=low["id"], action="reclaim").exists()
        # The unused part is rebooked, serving the same models.
        rebook = Reservation.objects.get(rebook_of=low["id"])
        assert rebook.serving.spec["models"] == ["defects"]
        assert rebook.serving.status in ("queued", "starting", "serving")  # it may have begun on the other GPU
    finally:
        worker.stop()


def test_a_replica_that_dies_is_started_again_and_a_lost_worker_takes_its_replicas_with_it(
    tmp_path, team, model_store, yolo_weights
):
    owner = make_user("serving-owner", team)
    register(team, "defects", yolo_weights.best, model_store)
    worker = NodeWorker(tmp_path / "node.log", HOST, REPLICA_PORTS="9630-9639").start()
    try:
        gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
        spec = {"models": ["defects"], "preload": ["defects"], "max_batch": 4, "max_delay_ms": 5, "memory_budget_mb": 256}
        _, serving = serving_now(owner, team, [gpu], spec, starts_in=timedelta(seconds=1), length=timedelta(hours=1))
        first = wait_for(lambda: (r := Replica.objects.filter(serving=serving, state="ready").first()) and r, 120, "a replica")
        # Preloaded: the pinned model is resident before any request.
        assert [(m["name"], m["pinned"]) for m in first.resident] == [("defects", True)]

        # Its process dies: it is recorded failed, and a fresh replica takes over on the same device.
        os.killpg(first.pid, signal.SIGKILL)
        second = wait_for(
            lambda: (r := Replica.objects.filter(serving=serving, state="ready").exclude(pk=first.pk).first()) and r,
            120, "a second replica",
        )
        failed = Replica.objects.get(pk=first.pk)
        assert failed.state == "failed" and "exited unexpectedly" in failed.reason
        assert second.gpu_id == gpu.pk and second.token != first.token

        # The worker is killed outright: its replica goes with it (it must not serve unsupervised)...
        worker.kill()
        wait_for(lambda: not os.path.exists(f"/proc/{second.pid}"), 60, "the orphaned replica to exit")
        # ...and the next worker records it and starts a fresh one while the booking lasts.
        worker = NodeWorker(tmp_path / "node-2.log", HOST, REPLICA_PORTS="9630-9639").start()
        third = wait_for(
            lambda: (r := Replica.objects.filter(serving=serving, state="ready").exclude(pk__in=[first.pk, second.pk]).first()) and r,
            120, "a replica from the new worker",
        )
        assert Replica.objects.get(pk=second.pk).state in ("stopped", "failed")
        assert ReplicaClient(third.address, third.token).get("/v1/status").json()["state"] == "ready"
    finally:
        worker.stop()
