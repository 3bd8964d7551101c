"""Each routing rule (routing/policy.py), on its own: no database, no network."""

import pytest

from routing import policy
from routing.policy import ReplicaView

KEY = ("defects", 3)
SHA = "a" * 64


def replica(id, *, weight=1.0, outstanding=0, resident=True, team=1, **fields):
    view = ReplicaView(
        id=id, address=f"10.0.0.{id}:9500", token="t", node=f"node{id}", team_id=team, weight=weight,
        max_batch=8, serves={KEY: SHA}, resident={KEY: SHA} if resident else {}, outstanding=outstanding,
        **fields,
    )
    return view


def test_a_draining_replica_an_ejected_one_and_one_whose_node_is_silent_take_no_new_requests():
    assert policy.is_healthy(replica(1), now=100)
    assert not policy.is_healthy(replica(1, state="draining"), now=100)
    assert not policy.is_healthy(replica(1, node_online=False), now=100)
    assert not policy.is_healthy(replica(1, ejected_until=101), now=100)
    assert policy.is_healthy(replica(1, ejected_until=100), now=100)  # its time out is over


def test_a_replica_with_other_bytes_than_the_registry_for_a_version_is_refused():
    assert policy.is_consistent(replica(1), KEY, SHA)
    assert not policy.is_consistent(replica(1), KEY, "b" * 64)  # started with other bytes
    reporting_other = replica(1)
    reporting_other.resident = {KEY: "c" * 64}
    assert not policy.is_consistent(reporting_other, KEY, SHA)  # holds other bytes
    assert policy.is_consistent(replica(1, resident=False), KEY, SHA)  # holds nothing yet
    assert not policy.is_consistent(replica(1), ("defects", 4), SHA)  # does not serve it


def test_a_bare_name_means_the_highest_version_a_replica_of_the_team_could_take_now():
    old, new, other_team, sick, wrong = replica(1), replica(2), replica(3, team=2), replica(4, state="draining"), replica(5)
    new.serves = {("defects", 5): SHA}
    other_team.serves = {("defects", 9): SHA}
    sick.serves = {("defects", 7): SHA}
    wrong.serves = {("defects", 6): "b" * 64}  # other bytes than the registry's
    registry = {(1, "defects", v): SHA for v in (3, 5, 6, 7)} | {(2, "defects", 9): SHA}

    assert policy.served_version([old, new, other_team, sick, wrong], 1, "defects", registry, now=0) == 5
    assert policy.served_version([old, new], 1, "defects", {(1, "defects", 3): SHA}, now=0) == 3  # 5 deleted
    assert policy.served_version([old], 1, "people", registry, now=0) is None


def test_candidates_are_the_teams_healthy_consistent_replicas_serving_that_version():
    mine, theirs, draining, wrong_bytes = replica(1), replica(2, team=2), replica(3, state="draining"), replica(4)
    wrong_bytes.serves = {KEY: "b" * 64}

    assert policy.candidates([mine, theirs, draining, wrong_bytes], 1, KEY, SHA, now=0) == [mine]


def test_warm_replicas_come_first_even_when_a_cold_one_is_idle():
    warm = replica(1, outstanding=2)
    cold = replica(2, outstanding=0, resident=False)

    assert policy.choose([cold, warm], KEY, queue_threshold=4) == (warm, policy.WARM)


def test_among_warm_replicas_the_least_in_flight_per_unit_of_weight_takes_it():
    small = replica(1, weight=1, outstanding=1)  # (1 + 1) / 1 = 2
    big = replica(2, weight=4, outstanding=3)  # (3 + 1) / 4 = 1

    assert policy.choose([small, big], KEY, queue_threshold=4) == (big, policy.WARM)


def test_a_forming_batch_with_room_is_joined():
    forming = replica(1, outstanding=2, outstanding_by_model={KEY: 2})
    idle = replica(2, outstanding=0)

    assert policy.choose([idle, forming], KEY, queue_threshold=4) == (forming, policy.BATCH)
    full = replica(1, outstanding=8, outstanding_by_model={KEY: 8})  # max_batch reached
    assert policy.choose([idle, full], KEY, queue_threshold=10) == (idle, policy.WARM)


def test_a_hot_model_spills_to_the_least_loaded_replica_once_every_warm_one_is_queued():
    hot = replica(1, outstanding=4)  # at the threshold
    cold = replica(2, outstanding=1, resident=False)

    assert policy.choose([hot, cold], KEY, queue_threshold=4) == (cold, policy.SPILL)


def test_a_model_resident_nowhere_goes_to_the_least_loaded_replica():
    busy, quiet = replica(1, outstanding=3, resident=False), replica(2, outstanding=1, resident=False)

    assert policy.choose([busy, quiet], KEY, queue_threshold=4) == (quiet, policy.COLD)
    assert policy.choose([], KEY, queue_threshold=4) == (None, None)


def test_ties_go_to_the_lower_id():
    assert policy.choose([replica(2), replica(1)], KEY, queue_threshold=4)[0].id == 1


def test_max_fails_within_the_window_eject_a_replica_for_the_timeout():
    view = replica(1)
    rules = dict(max_fails=3, fail_window=10, fail_timeout=30)

    assert not policy.record_failure(view, 0, **rules)
    assert not policy.record_failure(view, 11, **rules)  # the first has left the window
    assert not policy.record_failure(view, 12, **rules)
    assert policy.record_failure(view, 13, **rules)
    assert view.ejected_until == 43 and not policy.is_healthy(view, 42) and policy.is_healthy(view, 43)


@pytest.mark.parametrize(
    "reached, retried, expected",
    [(False, False, True), (False, True, False), (True, False, False), (True, True, False)],
)
def test_only_a_request_that_never_reached_the_model_is_tried_again_and_only_once(reached, retried, expected):
    assert policy.may_retry(reached_model=reached, retried=retried) is expected


@pytest.mark.parametrize(
    "status, error, meaning",
    [
        (503, "no_room", (None,)), (422, "model_too_large", (None,)), (503, "draining", (None,)),
        (503, "load_failed", ("failure",)), (409, "weights_mismatch", ("eject",)),
        (400, "bad_image", None), (500, "inference_failed", None), (503, "something_else", None),
    ],
)
def test_only_refusals_that_prove_the_model_did_not_run_may_go_elsewhere(status, error, meaning):
    assert policy.refused_unrun(status, error) == meaning


def test_failed_checks_in_a_row_eject_a_replica_and_a_passing_one_clears_the_count():
    view = replica(1)
    rules = dict(max_fails=3, fail_timeout=30)

    assert not policy.record_check(view, False, 0, **rules)
    assert not policy.record_check(view, False, 5, **rules)
    assert not policy.record_check(view, True, 10, **rules)  # answered: the count starts again
    assert not policy.record_check(view, False, 15, **rules)
    assert not policy.record_check(view, False, 20, **rules)
    assert policy.record_check(view, False, 25, **rules)  # a check timing out every 5 s is caught
    assert view.ejected_until == 55


def test_an_ejected_replica_comes_back_only_on_a_passing_check_after_its_time():
    assert not policy.may_readmit(50, now=49, check_passed=True)
    assert not policy.may_readmit(50, now=60, check_passed=False)
    assert policy.may_readmit(50, now=50, check_passed=True)


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 422, 429])
def test_a_4xx_answer_never_counts_toward_ejecting_the_replica(status):
    assert not policy.counts_against(status)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_answer_counts_toward_ejecting_the_replica(status):
    assert policy.counts_against(status)
