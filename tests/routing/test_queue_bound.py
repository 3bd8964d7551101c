"""The front door's own answers, without processes: its bounds (ROUTER_MAX_QUEUE, a team's requests
in flight, the body's size and time), what a replica's refusal that proves the model did not run
leads to (another replica, never a 502), and how a request that went wrong in the door is counted.
The replicas answer through httpx's MockTransport; the caller and its team are stubbed (the
database's part is tests/routing/test_front_door.py's)."""

import asyncio
import json
import logging
from urllib.parse import urlsplit

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient
from starlette.requests import Request

from apibase.throttling import FailedTokenThrottle
from routing import app as door_module
from routing import policy
from routing.app import Cached, Caller, FrontDoor, NotReached, ReplicaFailed, replica_session
from routing.limits import TeamRateLimit
from routing.table import ReplicaTable
from serving import signing

from ..replicas import free_port

SHA = "a" * 64
TOKEN_KEY = "ab" * 20


def predict_request(ref="defects", body=b"image", headers=(), receive=None, token=TOKEN_KEY):
    chunks = [body]

    async def deliver():
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": False}
        return {"type": "http.disconnect"}

    return Request({
        "type": "http", "method": "POST", "path": f"/api/v1/models/{ref}/predict", "query_string": b"",
        "headers": [(b"authorization", f"Token {token}".encode()), (b"content-type", b"image/jpeg"), *headers],
        "path_params": {"ref": ref}, "client": ("10.0.0.1", 40000),
    }, receive or deliver)


def test_past_the_queue_bound_a_request_is_429_with_retry_after(settings):
    settings.ROUTER_MAX_QUEUE = 2
    door = FrontDoor()
    door.in_flight = 2

    response = asyncio.run(door.predict(predict_request()))

    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert b'"error":"busy"' in response.body and door.in_flight == 2


def view(replica_id):
    return policy.ReplicaView(
        id=replica_id, address=f"127.0.0.1:{9500 + replica_id}", token="t", node=f"node{replica_id}", team_id=1,
        weight=1.0, max_batch=8, serves={("defects", 1): SHA}, resident={("defects", 1): SHA},
    )


class Replicas:
    """What each replica (by port) answers to a predict: (status, body dict), in place of the
    door's HTTP POST (FrontDoor._post); calls are counted."""

    def __init__(self):
        self.answers = {}
        self.calls = []

    async def post(self, url, body, headers):
        parts = urlsplit(url)
        self.calls.append(parts.port - 9500)
        assert signing.verify("t", "POST", parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        status, answer = self.answers[parts.port]
        return status, json.dumps(answer).encode()


@pytest.fixture
def door(settings):
    settings.ROUTER_MAX_FAILS, settings.ROUTER_FAIL_WINDOW_SECONDS, settings.ROUTER_FAIL_TIMEOUT_SECONDS = 2, 10, 5
    settings.ROUTER_QUEUE_THRESHOLD, settings.ROUTER_TEAM_RATE = 4, "1000/second"
    replicas = Replicas()
    front = FrontDoor()
    front.table = ReplicaTable(None, front.metrics)
    front._post = replicas.post
    front.table.merge([view(1), view(2)], {(1, "defects", 1): SHA})
    front.limit = TeamRateLimit("1000/second")

    async def caller(key):
        return Caller(7, False, frozenset({1})) if key == TOKEN_KEY else None

    async def teams_with_model(name, team_ids):
        return [(1, "vision")] if name == "defects" else []

    async def registry_sha(team, name, version):
        return None

    front.caller, front.teams_with_model, front.registry_sha = caller, teams_with_model, registry_sha
    front.replicas = replicas
    return front


def answered(replica_id):
    return 200, {"model": "defects", "version": 1, "sha256": SHA, "detections": [[]], "replica_said": replica_id}


def call(door, request):
    response = asyncio.run(door.predict(request))
    return response.status_code, json.loads(response.body) if response.body else None


@pytest.mark.parametrize("refusal", [(503, "no_room"), (422, "model_too_large"), (503, "draining")])
def test_a_refusal_unrun_goes_to_another_replica_and_does_not_count_against_the_first(door, refusal):
    status, error = refusal
    door.replicas.answers = {9501: (status, {"error": error, "detail": "not now"}), 9502: answered(2)}

    results = [call(door, predict_request("defects:1")) for _ in range(3)]

    # A draining replica gets nothing more once it said so; the others are tried again each time.
    later = "warm" if error == "draining" else "retry"
    assert [(s, b["replica"], b["route"]) for s, b in results] == [(200, 2, "retry"), (200, 2, later), (200, 2, later)]
    one = door.table.get(1)
    assert not one.failures and door.table.state_of(one) == ("draining" if error == "draining" else "ready")


def test_a_replica_refusing_for_other_bytes_is_out_at_once_and_one_that_failed_to_load_counts_a_failure(door):
    door.replicas.answers = {9501: (409, {"error": "weights_mismatch"}), 9502: (503, {"error": "load_failed"})}

    status, body = call(door, predict_request("defects:1"))

    # Neither ran the model: not a 502 (nothing failed after reaching it), not the caller's fault.
    assert status == 503 and body["error"] == "no_replica" and "weights_mismatch" in body["detail"]
    assert door.table.state_of(door.table.get(1)) == "ejected"
    assert len(door.table.get(2).failures) == 1 and door.table.state_of(door.table.get(2)) == "ready"


def test_a_replica_that_failed_after_taking_the_request_is_a_502_and_not_resent(door):
    door.replicas.answers = {9501: (500, {"error": "inference_failed"}), 9502: answered(2)}

    status, body = call(door, predict_request("defects:1"))

    assert status == 502 and body["error"] == "replica_error" and door.replicas.calls == [1]


def test_a_replica_answering_the_callers_400_again_and_again_stays_in_and_serves_the_next(door, settings):
    door.replicas.answers = {9501: (400, {"error": "bad_image", "field": "images", "detail": "nested too deep"})}

    refused = [call(door, predict_request("defects:1")) for _ in range(3 * settings.ROUTER_MAX_FAILS)]
    door.replicas.answers = {9501: answered(1)}
    status, body = call(door, predict_request("defects:1"))

    assert {(s, b["error"], b["replica"]) for s, b in refused} == {(400, "bad_image", 1)}
    assert not door.table.get(1).failures and door.table.state_of(door.table.get(1)) == "ready"
    assert (status, body["replica"]) == (200, 1)


def test_a_replica_answering_another_4xx_again_and_again_is_a_502_each_time_but_stays_in(door, settings):
    # A 4xx that is neither the caller's fault (passed on) nor proof the model did not run: the
    # replica refused, it did not fail (policy.counts_against).
    door.replicas.answers = {9501: (404, {"error": "not_found", "detail": "no such route"})}

    refused = [call(door, predict_request("defects:1")) for _ in range(3 * settings.ROUTER_MAX_FAILS)]
    door.replicas.answers = {9501: answered(1)}
    status, body = call(door, predict_request("defects:1"))

    assert {(s, b["error"]) for s, b in refused} == {(502, "replica_error")}
    assert not door.table.get(1).failures and door.table.state_of(door.table.get(1)) == "ready"
    assert (status, body["replica"]) == (200, 1)


def test_bad_tokens_past_the_rate_are_429_and_a_valid_token_from_that_address_still_gets_through(door):
    allowed = FailedTokenThrottle("10.0.0.1").num_requests
    door.replicas.answers = {9501: answered(1), 9502: answered(2)}

    bad = [call(door, predict_request("defects:1", token="cd" * 20))[0] for _ in range(allowed)]
    over = asyncio.run(door.predict(predict_request("defects:1", token="cd" * 20)))

    assert bad == [401] * allowed
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    assert json.loads(over.body)["error"] == "throttled"
    assert call(door, predict_request("defects:1"))[0] == 200


@pytest.mark.django_db
def test_bad_tokens_sent_to_the_api_count_at_the_front_door_in_the_same_cache(door):
    api = APIClient(REMOTE_ADDR="10.0.0.1")
    api.credentials(HTTP_AUTHORIZATION=f"Token {'0' * 40}")
    for _ in range(FailedTokenThrottle("10.0.0.1").num_requests):
        assert api.get("/api/v1/me/").status_code == 401

    status, body = call(door, predict_request("defects:1", token="cd" * 20))

    assert (status, body["error"]) == (429, "throttled")


def test_a_team_past_its_requests_in_flight_gets_429_and_others_do_not_count(door, settings):
    settings.ROUTER_TEAM_MAX_IN_FLIGHT = 2
    door.replicas.answers = {9501: answered(1), 9502: answered(2)}
    door.team_in_flight = {1: 2, 5: 40}

    status, body = call(door, predict_request("defects:1"))
    assert status == 429 and body["error"] == "busy"

    door.team_in_flight = {1: 1, 5: 40}
    assert call(door, predict_request("defects:1"))[0] == 200
    assert door.team_in_flight == {1: 1, 5: 40}


def test_a_body_that_does_not_arrive_in_time_is_408(door, settings):
    settings.ROUTER_BODY_SECONDS = 0.1

    async def never():
        await asyncio.sleep(60)

    status, body = call(door, predict_request("defects:1", receive=never))

    assert status == 408 and body["field"] == "body" and door.replicas.calls == [] and door.team_in_flight == {}


def test_a_body_over_the_limit_is_the_front_doors_413_declared_or_sent(door, monkeypatch):
    declared = predict_request("defects:1", headers=[(b"content-length", str(33 * 1024 * 1024).encode())])
    assert call(door, declared)[0] == 413
    monkeypatch.setattr(door_module, "MAX_BODY_BYTES", 10)

    status, body = call(door, predict_request("defects:1", body=b"x" * 11))

    assert status == 413 and body["field"] == "body" and door.replicas.calls == []


def test_a_client_gone_mid_upload_is_counted_499_without_an_error_logged(door, caplog):
    async def gone():
        return {"type": "http.disconnect"}

    with caplog.at_level(logging.INFO, logger="routing"):
        status, _ = call(door, predict_request("defects:1", receive=gone))

    assert status == 499 and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert door.metrics.requests.labels("defects:1", "499", "")._value.get() == 1


def test_only_a_database_error_is_said_to_be_the_databases(door):
    async def broken(name, team_ids):
        raise RuntimeError("a bug")

    async def no_database(name, team_ids):
        raise OperationalError("connection refused")

    door.teams_with_model = broken
    status, body = call(door, predict_request("defects:1"))
    assert status == 503 and body["detail"] == "the front door failed on this request: retry shortly"

    door.teams_with_model = no_database
    status, body = call(door, predict_request("defects:1"))
    assert status == 503 and "database" in body["detail"]


def test_the_model_label_names_a_version_only_once_the_registry_has_it(door):
    assert call(door, predict_request("defects:999"))[0] == 404

    scraped = [m.labels.get("model") for metric in door.metrics.requests.collect() for m in metric.samples]
    assert "defects" in scraped and "defects:999" not in scraped


def test_no_model_and_another_teams_model_are_the_same_403(door):
    async def others_have_it(name, team_ids):
        return []  # as teams_with_model answers for a name only other teams have, or none

    door.teams_with_model = others_have_it
    status, body = call(door, predict_request("secret"))

    assert status == 403 and body == {"error": "forbidden", "detail": "there is no model 'secret' that your teams may use",
                                      "field": "name"}


def test_bad_tokens_are_remembered_apart_and_bounded(monkeypatch):
    looked_up = []

    def lookup(key):
        looked_up.append(key)
        return "caller" if key == "good" else None

    cached = Cached(lookup, misses=3)

    async def run():
        await cached("good")
        for index in range(50):
            await cached(f"bad{index}")
        await cached("bad49")
        return await cached("good")

    assert asyncio.run(run()) == "caller"
    assert looked_up.count("good") == 1 and looked_up.count("bad49") == 1 and len(cached.missed) <= 3


def test_redis_down_is_logged_once_a_minute_not_per_request(caplog):
    clock = [1000.0]
    limit = TeamRateLimit("5/second", "redis://127.0.0.1:1/0", clock=lambda: clock[0])

    async def run():
        answers = [await limit.hit(1) for _ in range(5)]
        clock[0] += 61
        answers.append(await limit.hit(1))
        await limit.close()
        return answers

    with caplog.at_level(logging.WARNING, logger="routing"):
        assert asyncio.run(run()) == [None] * 6

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "5 request(s)" in warnings[1], warnings


def test_a_signature_made_from_the_bodys_digest_is_the_same_and_verifies():
    body = b"an image" * 1000
    digest = door_module._sha256(body)

    made = signing.sign("t", "POST", "/v1/models/defects:1/predict", b"ignored", now=1000, digest=digest)

    assert made == signing.sign("t", "POST", "/v1/models/defects:1/predict", body, now=1000)
    assert signing.verify("t", "POST", "/v1/models/defects:1/predict", body, made, now=1000)


def test_only_a_request_that_was_never_sent_is_not_reached(settings):
    """A refused connection: not sent (may go elsewhere). A replica that took the request and did
    not answer within ROUTER_REQUEST_TIMEOUT_SECONDS: it may have reached the model (never resent)."""
    settings.ROUTER_REQUEST_TIMEOUT_SECONDS = 0.3
    door = FrontDoor()

    async def silent(reader, writer):
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    async def run():
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        door.session = replica_session()
        outcomes = []
        try:
            for url in (f"http://127.0.0.1:{free_port()}/v1/x", f"http://127.0.0.1:{port}/v1/x"):
                try:
                    await door._post(url, b"image", {})
                except (NotReached, ReplicaFailed) as exc:
                    outcomes.append(type(exc))
        finally:
            await door.session.close()
            server.close()
        return outcomes

    assert asyncio.run(run()) == [NotReached, ReplicaFailed]
