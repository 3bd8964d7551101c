"""The front door for real: replica processes of two nodes (CPU devices) with real YOLO weights,
their bookings and replicas as rows in the test database, and the front door (`python -m routing`,
uvicorn) in a process of its own reading them, as production runs it."""

import hashlib
import os
import signal
import threading
from datetime import timedelta

import pytest
import redis
import requests
from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations.models import Allocation, Node, Reservation, Team
from reservations.services import Device, node_register
from routing.models import GpuWeight
from serving.models import Model, ModelVersion, Replica as ReplicaRow, Serving

from ..replicas import ONE_MODEL, TOKEN, FrontDoor, Replica, jpeg, spec
from ..support import at_once, make_user, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

# Settings the front door runs with here: a short queue threshold so a burst of eight spills, quick
# health checks and ejections, nodes that never time out (their heartbeat is set once).
ROUTER_ENV = dict(
    ROUTER_QUEUE_THRESHOLD="2", ROUTER_HEALTH_SECONDS="1", ROUTER_MAX_FAILS="3", ROUTER_FAIL_WINDOW_SECONDS="10",
    ROUTER_FAIL_TIMEOUT_SECONDS="3", ROUTER_HEARTBEAT_GRACE_SECONDS="3600", ROUTER_END_MARGIN_SECONDS="0",
    ROUTER_TEAM_RATE="1000/second",
)


def sha_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights(yolo_weights):
    """defects:1 and people:1 as the registry has them; `impostor`: other bytes for defects:1."""
    return {"defects": yolo_weights.variant(1), "people": yolo_weights.variant(3), "impostor": yolo_weights.variant(2)}


# Replicas a and b hold each request this long for a batch to form (a batch of eight fills sooner):
# requests sent together overlap there however slowly a loaded machine sends them, so how the front
# door spreads them does not depend on the machine's speed.
BATCH_WAIT_MS = 800


@pytest.fixture(scope="module")
def processes(weights, tmp_path_factory):
    """Replicas "a" and "b" (defects:1 pinned, people:1 on demand); "c", whose defects:1 (pinned)
    and people:1 (on demand) are other bytes than the registry's; "d", like a and b but with memory
    for one model only (its pinned defects:1); started together, then waited for."""
    folder = tmp_path_factory.mktemp("routing")
    served = [spec("defects", weights["defects"], pinned=True), spec("people", weights["people"])]
    started = {
        "a": Replica(folder / "a", served, replica=1, memory_budget=4 * ONE_MODEL, max_delay_ms=BATCH_WAIT_MS),
        "b": Replica(folder / "b", served, replica=2, memory_budget=4 * ONE_MODEL, max_delay_ms=BATCH_WAIT_MS),
        "d": Replica(folder / "d", served, replica=4, memory_budget=int(1.5 * ONE_MODEL)),
        "c": Replica(folder / "c", [spec("defects", weights["impostor"], pinned=True), spec("people", weights["impostor"])],
                     replica=3),
    }
    try:
        for replica in started.values():
            replica.launch()
        for replica in started.values():
            replica.ready()
        yield started
    finally:
        for replica in started.values():
            replica.stop()


@pytest.fixture(scope="module")
def front_door(django_db_setup, tmp_path_factory):
    with FrontDoor(tmp_path_factory.mktemp("front-door") / "router.log", **ROUTER_ENV) as door:
        yield door


class Cluster:
    """The rows the front door reads: a team with defects:1 (and a registered defects:2 nobody
    serves) and people:1, two CPU nodes, and a serving booking with a ready replica row for each
    replica process it is given."""

    def __init__(self, weights):
        self.team = Team.objects.create(name="Vision", slug="vision")
        self.owner = make_user("owner", self.team)
        self.token = Token.objects.create(user=self.owner).key
        self.shas = {}
        for name, path in (("defects", weights["defects"]), ("people", weights["people"])):
            model = Model.objects.create(team=self.team, name=name)
            ModelVersion.objects.create(model=model, version=1, imgsz=64, class_names=["square", "bar"],
                                        size=path.stat().st_size, sha256=sha_of(path))
            self.shas[name] = sha_of(path)
        ModelVersion.objects.create(model=Model.objects.get(name="defects"), version=2, imgsz=64,
                                    class_names=["square", "bar"], size=1, sha256="2" * 64)
        self.gpus = {}
        for host in ("node1", "node2"):
            node = node_register(hostname=host, devices=[Device(index=i, model="cpu", memory_mb=4096, uuid=f"{host}-{i}")
                                                         for i in range(2)])
            self.gpus[host] = list(node.gpus.order_by("index"))

    def serve(self, process, host, index, resident=()):
        """A live serving booking of defects:1 and people:1 on one device, with its ready replica
        at `process`; `resident`: what its supervisor last wrote it holds, {name: sha256}."""
        gpu = self.gpus[host][index]
        now = timezone.now()
        reservation = Reservation.objects.create(
            user=self.owner, team=self.team, start=now - timedelta(minutes=1), end=now + timedelta(hours=1),
            gpu_count=1, status="active",
        )
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
        serving = Serving.objects.create(
            reservation=reservation, status="serving",
            spec={"models": ["defects:1", "people:1"], "preload": [], "max_batch": 8, "max_delay_ms": 0},
            resolved=[{"name": n, "version": 1, "sha256": self.shas[n]} for n in ("defects", "people")],
        )
        return ReplicaRow.objects.create(
            serving=serving, gpu=gpu, node=gpu.node, device="cpu", address=f"127.0.0.1:{process.port}", token=TOKEN,
            state="ready", memory_budget=4 * ONE_MODEL,
            resident=[{"name": n, "version": 1, "sha256": sha} for n, sha in dict(resident).items()],
        )


@pytest.fixture
def cluster(weights):
    return Cluster(weights)


def predict(door, token, ref, body=None, **kwargs):
    return requests.post(
        f"{door.url}/api/v1/models/{ref}/predict", data=jpeg() if body is None else body,
        headers={"Authorization": f"Token {token}", "Content-Type": "image/jpeg"}, timeout=120, **kwargs,
    )


def in_state(door, replica, state):
    """Whether the front door's health gauge has `replica` (a row) in `state`."""
    text = requests.get(f"{door.url}/metrics", timeout=10).text
    wanted = (f'replica="{replica.pk}"', f'state="{state}"')
    return any(line.startswith("router_replica_state{") and line.endswith(" 1.0") and all(w in line for w in wanted)
               for line in text.splitlines())


def routable(door, *replicas):
    """Wait until the front door has read `replicas` and sees them ready."""
    wait_for(lambda: all(in_state(door, r, "ready") for r in replicas), 30,
             f"the front door to route to replicas {[r.pk for r in replicas]}")


def served_by(answers):
    counts = {}
    for answer in answers:
        assert answer.status_code == 200, answer.text
        counts[answer.json()["replica"]] = counts.get(answer.json()["replica"], 0) + 1
    return counts


def ensure(process, name, resident):
    """Make `process` hold (pinned) or not hold `name`:1, through its operator endpoints."""
    action = "load" if resident else "unload"
    body = b'{"pin": true}' if resident else b""
    answer = process.client.post(f"/v1/models/{name}:1/{action}", body, "application/json")
    assert answer.status_code == 200, answer.text


def test_load_spreads_over_replicas_by_weight(processes, front_door, cluster):
    a = cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    GpuWeight.objects.create(gpu=a.gpu, weight=1)
    GpuWeight.objects.create(gpu=b.gpu, weight=3)
    routable(front_door, a, b)

    # Bursts of eight at once, held together at the replicas: within each, b (weight 3) takes six
    # before its load (in flight / weight) reaches the queue threshold (2), then a takes two.
    answers = []
    for _ in range(5):
        answers += at_once([lambda: predict(front_door, cluster.token, "defects:1") for _ in range(8)])

    counts = served_by(answers)
    assert 0.15 <= counts.get(a.pk, 0) / len(answers) <= 0.35, counts
    body = answers[0].json()
    assert (body["model"], body["version"], body["sha256"]) == ("defects", 1, cluster.shas["defects"])
    assert body["node"] in ("node1", "node2") and body["route"] in ("warm", "batch", "spill")


def test_a_replica_holding_the_model_gets_it_over_an_idle_one_that_does_not(processes, front_door, cluster):
    ensure(processes["a"], "people", resident=True)
    ensure(processes["b"], "people", resident=False)
    a = cluster.serve(processes["a"], "node1", 0, resident=cluster.shas)
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    GpuWeight.objects.create(gpu=b.gpu, weight=3)  # b is bigger and idle: only warmth sends it to a
    routable(front_door, a, b)

    answers = [predict(front_door, cluster.token, "people") for _ in range(4)]

    assert served_by(answers) == {a.pk: 4}
    assert {answer.json()["route"] for answer in answers} == {"warm"}
    assert {(answer.json()["version"], answer.json()["cache"]) for answer in answers} == {(1, "hit")}


def test_a_hot_model_spreads_to_a_cold_replica_under_load(processes, front_door, cluster):
    ensure(processes["a"], "people", resident=True)
    ensure(processes["b"], "people", resident=False)
    a = cluster.serve(processes["a"], "node1", 0, resident=cluster.shas)
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    routable(front_door, a, b)

    answers = at_once([lambda: predict(front_door, cluster.token, "people:1") for _ in range(8)])

    counts = served_by(answers)
    assert counts.get(a.pk, 0) >= 2 and counts.get(b.pk, 0) >= 1, counts
    routes = {answer.json()["route"] for answer in answers if answer.json()["replica"] == b.pk}
    assert routes <= {"spill", "batch", "warm"} and "spill" in routes
    assert processes["b"].model("people")["resident"]


def test_a_replica_serving_other_bytes_than_the_registry_is_never_chosen(processes, front_door, cluster):
    # What c's supervisor wrote it holds: the bytes it loaded, not the registry's.
    c = cluster.serve(processes["c"], "node1", 1, resident={"defects": processes["c"].model("defects")["sha256"]})
    a = cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    routable(front_door, a)

    answers = at_once([lambda: predict(front_door, cluster.token, "defects:1") for _ in range(6)])

    assert served_by(answers) == {a.pk: 6}
    assert {answer.json()["sha256"] for answer in answers} == {cluster.shas["defects"]}
    scraped = requests.get(f"{front_door.url}/metrics", timeout=10).text
    assert f'replica="{a.pk}"' in scraped and not [line for line in scraped.splitlines()
                                                   if line.startswith("router_requests_total") and f'replica="{c.pk}"' in line]


def test_a_replica_answering_with_other_bytes_than_the_registrys_is_refused_and_ejected(processes, front_door, cluster):
    ensure(processes["c"], "people", resident=False)
    c = cluster.serve(processes["c"], "node1", 1)  # nothing on record says what it would load
    routable(front_door, c)

    answer = predict(front_door, cluster.token, "people:1")

    assert answer.status_code == 502 and answer.json()["error"] == "inconsistent_replica", answer.text
    assert in_state(front_door, c, "ejected")
    again = predict(front_door, cluster.token, "people:1")
    assert again.status_code == 503 and again.json()["error"] == "no_replica"


def test_a_replica_off_a_node_that_stopped_heartbeating_or_draining_gets_nothing(processes, front_door, cluster):
    a = cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    GpuWeight.objects.create(gpu=b.gpu, weight=3)
    routable(front_door, a, b)
    Node.objects.filter(hostname="node2").update(online=False)
    wait_for(lambda: in_state(front_door, b, "offline"), 10, "node2 out")

    assert served_by(at_once([lambda: predict(front_door, cluster.token, "defects:1") for _ in range(4)])) == {a.pk: 4}

    ReplicaRow.objects.filter(pk=a.pk).update(state="draining")
    wait_for(lambda: in_state(front_door, a, "draining"), 10, "a draining")
    answer = predict(front_door, cluster.token, "defects:1")
    assert answer.status_code == 503 and answer.json()["error"] == "no_replica"
    assert int(answer.headers["Retry-After"]) >= 1 and "defects:1" in answer.json()["detail"]


def test_callers_are_refused_with_a_clear_status(processes, front_door, cluster):
    outsiders = Team.objects.create(name="Language", slug="nlp")
    outsider = Token.objects.create(user=make_user("outsider", outsiders)).key
    staff = Token.objects.create(user=make_user("staff", None, is_staff=True)).key
    routable(front_door, cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]}))

    cases = {
        "no token": requests.post(f"{front_door.url}/api/v1/models/defects/predict", data=jpeg(), timeout=30),
        "bad token": predict(front_door, "f" * 40, "defects"),
        "other team": predict(front_door, outsider, "defects"),
        "no such model": predict(front_door, cluster.token, "nothing"),
        "bad name": predict(front_door, cluster.token, "Defects"),
        "bad version": predict(front_door, cluster.token, "defects:01"),
        "unknown version": predict(front_door, cluster.token, "defects:9"),
        "nobody serves it": predict(front_door, cluster.token, "defects:2"),
    }

    status = {case: answer.status_code for case, answer in cases.items()}
    assert status == {
        "no token": 401, "bad token": 401, "other team": 403, "no such model": 403, "bad name": 400,
        "bad version": 400, "unknown version": 404, "nobody serves it": 503,
    }
    # Another team's model and no model at all read the same: names are not found out by asking.
    assert cases["other team"].json() == {"error": "forbidden", "field": "name",
                                          "detail": "there is no model 'defects' that your teams may use"}
    assert cases["no such model"].json()["detail"] == "there is no model 'nothing' that your teams may use"
    assert cases["bad name"].json()["field"] == "name" and cases["bad version"].json()["field"] == "version"
    assert "Retry-After" in cases["nobody serves it"].headers and "defects:2" in cases["nobody serves it"].json()["detail"]
    # A bad image is the replica's 400, passed on with where it was answered.
    bad = predict(front_door, cluster.token, "defects:1", body=b"not an image")
    assert bad.status_code == 400 and bad.json()["field"] == "images" and "replica" in bad.json()
    # The query goes on to the replica, signed with it; its 400 about it comes back.
    assert predict(front_door, cluster.token, "defects:1", params={"conf": "0.5"}).status_code == 200
    bad_conf = predict(front_door, cluster.token, "defects:1", params={"conf": "lots"})
    assert bad_conf.status_code == 400 and bad_conf.json()["field"] == "conf"
    # Staff may use any team's model.
    assert predict(front_door, staff, "defects:1").status_code == 200
    # Metrics are for the monitor: a request that came through a proxy is refused.
    assert requests.get(f"{front_door.url}/metrics", headers={"X-Forwarded-For": "10.0.0.1"}, timeout=10).status_code == 403


def test_over_the_team_rate_is_429_with_retry_after(cluster, tmp_path):
    # The counts are kept in CACHE_URL's Redis, as the API's throttles are (the test Redis here).
    cache = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    cache.delete(*cache.keys("router-rate*") or ["none"])
    env = {**ROUTER_ENV, "ROUTER_TEAM_RATE": "3/hour", "CACHE_URL": settings.CELERY_BROKER_URL}
    door = FrontDoor(tmp_path / "router.log", **env).start()
    try:
        answers = [predict(door, cluster.token, "defects:2") for _ in range(4)]
    finally:
        door.stop()

    assert [a.status_code for a in answers] == [503, 503, 503, 429]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 3600 and answers[3].json()["error"] == "rate_limited"
    assert cache.keys("router-rate*")


def test_a_replica_with_no_room_for_the_model_sends_the_request_elsewhere_and_stays_in(processes, front_door, cluster):
    # d holds its pinned defects:1 and has no memory for people:1 besides: it refuses it unrun.
    assert (processes["d"].predict("people:1").status_code, processes["d"].predict("people:1").json()["error"]) == (503, "no_room")
    ensure(processes["b"], "people", resident=False)
    d = cluster.serve(processes["d"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    routable(front_door, d, b)

    # Both idle, neither holds people:1: the tie goes to the lower id, d, which refuses it unrun.
    first = predict(front_door, cluster.token, "people:1")

    assert (first.status_code, first.json()["replica"], first.json()["route"]) == (200, b.pk, "retry"), first.text
    assert (first.json()["version"], first.json()["sha256"]) == (1, cluster.shas["people"])
    # Not a failure of d's: it stays in, and takes what it has room for.
    assert in_state(front_door, d, "ready")
    assert predict(front_door, cluster.token, "defects:1").json()["replica"] == d.pk


def test_a_hung_replica_is_ejected_by_its_health_checks_and_readmitted_when_it_answers_again(processes, front_door, cluster):
    a = cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    routable(front_door, a, b)
    group = os.getpgid(processes["a"].process.pid)

    os.killpg(group, signal.SIGSTOP)  # it still accepts connections (the kernel does), never answers
    try:
        # Checks every second, each timing out after one: three in a row eject it.
        wait_for(lambda: in_state(front_door, a, "ejected"), 15, "the hung replica ejected")
        answers = [predict(front_door, cluster.token, "defects:1") for _ in range(3)]
        assert served_by(answers) == {b.pk: 3}
    finally:
        os.killpg(group, signal.SIGCONT)

    wait_for(lambda: in_state(front_door, a, "ready"), 30, "the replica readmitted")
    # Both idle and warm, equal weights: the tie goes to the lower id, a.
    assert predict(front_door, cluster.token, "defects:1").json()["replica"] == a.pk


def test_killing_a_replica_mid_load_loses_no_request_it_had_not_taken_and_it_comes_back(processes, front_door, cluster):
    a = cluster.serve(processes["a"], "node1", 0, resident={"defects": cluster.shas["defects"]})
    b = cluster.serve(processes["b"], "node2", 0, resident={"defects": cluster.shas["defects"]})
    routable(front_door, a, b)
    retries_before = front_door.metric('router_decisions_total{decision="retry"}')
    answers, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            answers.append(predict(front_door, cluster.token, "defects:1"))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 8, 60, "requests before the kill")
        processes["a"].kill()
        killed_at = len(answers)
        wait_for(lambda: len(answers) >= killed_at + 24, 60, "requests after the kill")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)

    # Only a request that had reached the killed replica may fail (it may have reached its model,
    # so it is not sent twice); every other one was answered, those refused a connection elsewhere.
    failed = [answer for answer in answers if answer.status_code != 200]
    assert all(f.status_code == 502 and f.json()["error"] == "replica_failed" for f in failed), [f.text for f in failed]
    assert len(failed) <= 4
    assert all(answer.json()["replica"] == b.pk for answer in answers[killed_at + 4:] if answer.status_code == 200)
    assert front_door.metric('router_decisions_total{decision="retry"}') > retries_before
    wait_for(lambda: in_state(front_door, a, "ejected"), 10, "a ejected")

    processes["a"].start()  # on the same port
    wait_for(lambda: in_state(front_door, a, "ready"), 30, "a readmitted")
    # Both idle and warm, equal weights: the tie goes to the lower id, a.
    assert predict(front_door, cluster.token, "defects:1").json()["replica"] == a.pk
