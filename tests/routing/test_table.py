"""The front door's replica table (routing.table): what survives a reload of the database, what a
health check changes, and how an ejected replica comes back. The replicas answer through httpx's
MockTransport (their status as JSON) and the clock is a number the test moves: no processes."""

import asyncio
import json

import httpx
import pytest

from routing import policy
from routing.table import ReplicaTable

SHA = "a" * 64


def view(replica_id, **fields):
    return policy.ReplicaView(
        id=replica_id, address=f"127.0.0.1:{9500 + replica_id}", token="t", node="node1", team_id=1, weight=1.0,
        max_batch=8, serves={("defects", 1): SHA}, **fields,
    )


class Replicas:
    """What each replica (by port) answers to GET /v1/status: a dict, or None for a refused connection."""

    def __init__(self):
        self.answers = {}

    def __call__(self, request):
        answer = self.answers.get(request.url.port)
        if answer is None:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, content=json.dumps(answer).encode())


def status(state="ready", resident=(("defects", 1, SHA),)):
    return {"state": state, "models": [{"name": n, "version": v, "sha256": s, "resident": True} for n, v, s in resident]}


@pytest.fixture
def router_settings(settings):
    settings.ROUTER_MAX_FAILS, settings.ROUTER_FAIL_WINDOW_SECONDS, settings.ROUTER_FAIL_TIMEOUT_SECONDS = 2, 10, 5
    return settings


@pytest.fixture
def clock():
    return [1000.0]


@pytest.fixture
def table(router_settings, clock):
    replicas = Replicas()
    rows = {"views": [view(1), view(2)]}
    table = ReplicaTable(
        httpx.AsyncClient(transport=httpx.MockTransport(replicas)),
        load=lambda now: ([view(v.id) for v in rows["views"]], {}),  # fresh objects, as from the database
        clock=lambda: clock[0],
    )
    table.replicas, table.rows = replicas, rows
    return table


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_reload_keeps_the_routers_own_state_and_drops_replicas_gone_from_the_database(table, clock):
    run(table.reload())
    first = table.get(1)
    first.outstanding, first.outstanding_by_model = 3, {("defects", 1): 3}
    table.failure(first)

    table.rows["views"] = [view(1)]
    run(table.reload())

    assert table.get(1) is first and first.outstanding == 3 and len(first.failures) == 1
    assert table.get(2) is None and [v.id for v in table.views()] == [1]


def test_a_check_updates_what_is_resident_and_a_loading_or_draining_replica_is_not_ready(table, clock):
    run(table.reload())
    table.replicas.answers = {9501: status("loading", resident=()), 9502: status(resident=(("defects", 1, "b" * 64),))}

    run(table.check_all())

    one, two = table.get(1), table.get(2)
    assert one.state == "loading" and not policy.is_healthy(one, clock[0])
    assert two.resident == {("defects", 1): "b" * 64} and not policy.is_consistent(two, ("defects", 1), SHA)
    # The supervisor's older record in the database does not undo what the replica said.
    run(table.reload())
    assert table.get(2).resident == {("defects", 1): "b" * 64} and table.get(1).state == "loading"


def test_failed_checks_eject_a_replica_which_comes_back_only_on_a_check_that_succeeds_after_its_time(table, clock):
    run(table.reload())
    table.replicas.answers = {9502: status()}  # replica 1 refuses connections

    run(table.check_all())
    assert policy.is_healthy(table.get(1), clock[0])
    clock[0] += 1
    run(table.check_all())
    assert table.state_of(table.get(1)) == "ejected" and not policy.is_healthy(table.get(1), clock[0])

    clock[0] += 10  # its time is up, but it still refuses: still out
    run(table.check_all())
    assert not policy.is_healthy(table.get(1), clock[0])

    table.replicas.answers[9501] = status()
    run(table.check_all())
    one = table.get(1)
    assert policy.is_healthy(one, clock[0]) and table.state_of(one) == "ready" and not one.failures


def test_a_replica_answering_before_its_time_is_up_stays_out(table, clock):
    run(table.reload())
    table.replicas.answers = {9501: status(), 9502: status()}
    table.eject(table.get(1), "answered with other bytes")

    clock[0] += 4
    run(table.check_all())
    assert not policy.is_healthy(table.get(1), clock[0])
    clock[0] += 2
    run(table.check_all())
    assert policy.is_healthy(table.get(1), clock[0])


def test_failed_checks_count_apart_from_failed_requests(table, clock):
    run(table.reload())
    table.replicas.answers = {9502: status()}  # replica 1 refuses its check once, then answers

    run(table.check_all())
    table.failure(table.get(1))  # one failed request: one in the passive window, not two
    assert policy.is_healthy(table.get(1), clock[0])

    table.replicas.answers[9501] = status()
    run(table.check_all())  # a passing check clears the failed checks in a row
    table.replicas.answers.pop(9501)
    run(table.check_all())
    assert policy.is_healthy(table.get(1), clock[0]) and table.get(1).failed_checks == 1


class Hung(Replicas):
    """Replica 1 accepts the check and never answers; the others answer at once (checks counted)."""

    def __init__(self):
        super().__init__()
        self.checked = {}

    async def __call__(self, request):
        port = request.url.port
        self.checked[port] = self.checked.get(port, 0) + 1
        if port == 9501:
            await asyncio.sleep(3600)
        return super().__call__(request)


def test_a_hung_replica_is_ejected_by_its_checks_timing_out_and_never_slows_the_others_checks(router_settings, clock, monkeypatch):
    router_settings.ROUTER_HEALTH_SECONDS = 0.05
    monkeypatch.setattr("routing.table.HEALTH_TIMEOUT_SECONDS", 0.3)
    replicas = Hung()
    replicas.answers = {9502: status()}
    table = ReplicaTable(httpx.AsyncClient(transport=httpx.MockTransport(replicas)),
                         load=lambda now: ([view(1), view(2)], {}), clock=lambda: clock[0])

    async def for_a_while():
        await table.reload()  # as FrontDoor.start does before it runs the table
        task = asyncio.create_task(table.run())
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(for_a_while())

    # Two checks of 0.3 s timed out in a row (ROUTER_MAX_FAILS = 2): out, while replica 2 was
    # checked every 0.05 s throughout, not once per round of the slowest.
    assert table.state_of(table.get(1)) == "ejected" and not policy.is_healthy(table.get(1), clock[0])
    assert replicas.checked[9502] >= 8 and policy.is_healthy(table.get(2), clock[0]), replicas.checked
