"""What a hostile or buggy client tried, for real: a replica process with real YOLO weights, its
serving booking and replica as rows in the test database, the front door (`python -m routing`) in a
process of its own, and the web's API in this one. A client's bad body is that client's 400 on every
path and never takes the replica out; a connection that never finishes its headers is closed."""

import hashlib
import json
import socket
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations.models import Allocation, Reservation, Team
from reservations.services import Device, node_register
from serving.models import Model, ModelVersion, Replica as ReplicaRow, Serving

from ..replicas import ONE_MODEL, TOKEN, FrontDoor, Replica, closed_by_server, jpeg, spec
from ..support import client_for, make_user, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

HEADER_SECONDS = 1
ROUTER_ENV = dict(
    ROUTER_HEALTH_SECONDS="1", ROUTER_MAX_FAILS="3", ROUTER_FAIL_WINDOW_SECONDS="30", ROUTER_FAIL_TIMEOUT_SECONDS="30",
    ROUTER_HEARTBEAT_GRACE_SECONDS="3600", ROUTER_END_MARGIN_SECONDS="0", ROUTER_TEAM_RATE="1000/second",
    ROUTER_HEADER_SECONDS=str(HEADER_SECONDS),
)
# 10,000 levels in 20 KB: Python's json gives up near a thousand.
DEEP = b'{"images": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"


@pytest.fixture(scope="module")
def replica(yolo_weights, tmp_path_factory):
    process = Replica(tmp_path_factory.mktemp("hostile"), [spec("defects", yolo_weights.variant(1), pinned=True)])
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def front_door(django_db_setup, tmp_path_factory):
    with FrontDoor(tmp_path_factory.mktemp("front-door") / "router.log", **ROUTER_ENV) as door:
        yield door


@pytest.fixture
def served(replica, yolo_weights):
    """The rows of a live serving booking of defects:1 whose ready replica is `replica`; returns
    (its owner, the replica's row)."""
    team = Team.objects.create(name="Vision", slug="vision")
    owner = make_user("owner", team)
    sha = hashlib.sha256(yolo_weights.variant(1).read_bytes()).hexdigest()
    model = Model.objects.create(team=team, name="defects")
    ModelVersion.objects.create(model=model, version=1, imgsz=64, class_names=["square", "bar"], size=1, sha256=sha)
    node = node_register(hostname="node1", devices=[Device(index=0, model="cpu", memory_mb=4096, uuid="node1-0")])
    gpu = node.gpus.get()
    now = timezone.now()
    reservation = Reservation.objects.create(
        user=owner, team=team, start=now - timedelta(minutes=1), end=now + timedelta(hours=1), gpu_count=1,
        status="active",
    )
    Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
    serving = Serving.objects.create(
        reservation=reservation, status="serving", spec={"models": ["defects:1"], "preload": ["defects:1"]},
        resolved=[{"name": "defects", "version": 1, "sha256": sha}],
    )
    row = ReplicaRow.objects.create(
        serving=serving, gpu=gpu, node=node, device="cpu", address=f"127.0.0.1:{replica.port}", token=TOKEN,
        state="ready", memory_budget=4 * ONE_MODEL, resident=[{"name": "defects", "version": 1, "sha256": sha}],
    )
    return owner, row


def through_front_door(door, owner, body, content_type):
    return requests.post(
        f"{door.url}/api/v1/models/defects:1/predict", data=body, timeout=120,
        headers={"Authorization": f"Token {Token.objects.get_or_create(user=owner)[0].key}", "Content-Type": content_type},
    )


def in_state(door, row, state):
    text = requests.get(f"{door.url}/metrics", timeout=10).text
    return any(line.startswith("router_replica_state{") and f'replica="{row.pk}"' in line and f'state="{state}"' in line
               and line.endswith(" 1.0") for line in text.splitlines())


def assert_bad_body(response):
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_image" and response.json()["field"] == "images"
    assert "nested too deep" in response.json()["detail"]


def test_a_body_nested_10000_deep_is_the_replicas_400(replica):
    logged = len(replica.log())

    answer = replica.predict("defects:1", DEEP, "application/json")

    assert_bad_body(answer)
    assert "Traceback" not in replica.log()[logged:]


def test_a_body_nested_10000_deep_is_a_400_through_the_web(served):
    owner, row = served

    answer = client_for(owner).post(
        f"/api/v1/replicas/{row.pk}/models/defects:1/predict/", DEEP, content_type="application/json"
    )

    assert answer.status_code == 400, answer.content
    assert json.loads(answer.content)["error"] == "bad_image"


def test_deep_bodies_through_the_front_door_are_400s_and_never_take_the_replica_out(front_door, served):
    owner, row = served
    wait_for(lambda: in_state(front_door, row, "ready"), 30, "the front door to route to the replica")

    refused = [through_front_door(front_door, owner, DEEP, "application/json") for _ in range(6)]
    good = through_front_door(front_door, owner, jpeg(), "image/jpeg")

    for answer in refused:
        assert_bad_body(answer)
        assert answer.json()["replica"] == row.pk
    assert good.status_code == 200 and good.json()["replica"] == row.pk, good.text
    assert in_state(front_door, row, "ready")


def connect(door):
    connection = socket.create_connection(("127.0.0.1", door.port), timeout=5)
    connection.settimeout(0.25)
    return connection


def test_a_connection_that_never_finishes_its_headers_is_closed(front_door):
    connection = connect(front_door)
    try:
        connection.sendall(b"POST /api/v1/models/defects/predict HTTP/1.1\r\nHost: door\r\n")

        assert closed_by_server(connection, HEADER_SECONDS + 5, trickle=b"X-Slow: " + b"a" * 200)
    finally:
        connection.close()


def test_a_connection_that_sends_nothing_is_closed(front_door):
    connection = connect(front_door)
    try:
        assert closed_by_server(connection, HEADER_SECONDS + 5)
    finally:
        connection.close()


def test_a_kept_alive_connection_must_send_its_next_headers_in_time_too(front_door):
    connection = connect(front_door)
    connection.settimeout(5)
    try:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
        assert connection.recv(1024).startswith(b"HTTP/1.1 ")
        connection.settimeout(0.25)

        assert closed_by_server(connection, HEADER_SECONDS + 5, trickle=b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200)
    finally:
        connection.close()
