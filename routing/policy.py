"""The routing rules, each in one place: which replicas may take a request, which one does, when a
replica is out, and when a request may be tried again. Pure functions over the router's view of
its replicas (`ReplicaView`): no database, no network, so each rule has its own test
(tests/routing/test_policy.py). The front door (routing.app) and its replica table (routing.table)
keep that view current and call these.
"""

from collections import deque
from dataclasses import dataclass, field

# Decisions, as the metrics and the per-request log line name them.
WARM = "warm"  # the model is resident there and its queue is short
BATCH = "batch"  # warm, and a batch of that model is forming there: join it
SPILL = "spill"  # every warm replica is queued past the threshold: the least loaded takes it
COLD = "cold"  # resident nowhere: the least loaded loads it
RETRY = "retry"  # the first replica could not be reached: another one


@dataclass
class ReplicaView:
    """One replica as the router sees it."""

    id: int
    address: str
    token: str
    node: str
    team_id: int  # the serving booking's team: it serves that team's models only
    weight: float
    max_batch: int
    # The versions its booking serves, with the SHA-256 it was started with: {(name, version): sha256}.
    serves: dict
    # From its booking and its node: "ready" or "draining"; whether its node heartbeats.
    state: str = "ready"
    node_online: bool = True
    # From its last health check: {(name, version): sha256} of the models it holds.
    resident: dict = field(default_factory=dict)
    # The router's own accounting: requests it has sent there and not had back, in all and by model.
    outstanding: int = 0
    outstanding_by_model: dict = field(default_factory=dict)
    # Passive health: when recent failures happened (monotonic seconds), and until when it is out.
    failures: deque = field(default_factory=deque)
    ejected_until: float = 0.0
    # Active health: health checks failed in a row.
    failed_checks: int = 0

    def load(self):
        """Requests in flight there per unit of weight."""
        return self.outstanding / self.weight


def is_healthy(replica, now):
    """Rule: a replica takes new requests when it is ready (not draining: its booking is ending or
    preempted), its node heartbeats, and it is not ejected after failures."""
    return replica.state == "ready" and replica.node_online and replica.ejected_until <= now


def is_consistent(replica, key, registry_sha):
    """Rule: the same version is the same bytes everywhere: a replica whose booking serves `key`
    with other bytes than the registry's, or that reports other bytes resident for it, is refused."""
    if replica.serves.get(key) != registry_sha:
        return False
    reported = replica.resident.get(key)
    return reported is None or reported == registry_sha


def served_version(replicas, team_id, name, registry, now):
    """Rule: a model named without a version means the highest version that a replica of the team
    could take now (healthy, with the registry's bytes for it: `registry` is {(team id, name,
    version): sha256}); None when none could. Every response names the version (and hash) it used."""
    versions = [
        version
        for replica in replicas
        if replica.team_id == team_id and is_healthy(replica, now)
        for (served, version) in replica.serves
        if served == name
        and registry.get((team_id, name, version)) is not None
        and is_consistent(replica, (name, version), registry[(team_id, name, version)])
    ]
    return max(versions, default=None)


def candidates(replicas, team_id, key, registry_sha, now):
    """Rule: the replicas that may take a request for `key` ((name, version)) of the team's model:
    healthy, of a live booking of that team that serves that version, with the registry's bytes."""
    return [
        replica
        for replica in replicas
        if replica.team_id == team_id
        and key in replica.serves
        and is_healthy(replica, now)
        and is_consistent(replica, key, registry_sha)
    ]


def choose(eligible, key, *, queue_threshold):
    """Rule: where a request goes, and why (a decision constant). Warm first: among replicas that
    hold the model, one where a batch of it is forming and still has room joins that batch; else
    the least loaded (in flight per unit of weight) whose load is under `queue_threshold`. When
    every warm replica is past it, or none is warm, the least loaded of all takes it (and loads
    the model): a hot model spreads out instead of piling onto one replica. Ties go to the lower id,
    so the choice is reproducible. None when there is no candidate."""
    if not eligible:
        return None, None

    def least_loaded(replicas):
        return min(replicas, key=lambda r: ((r.outstanding + 1) / r.weight, r.id))

    warm = [r for r in eligible if key in r.resident]
    short = [r for r in warm if r.load() < queue_threshold]
    forming = [r for r in short if 0 < r.outstanding_by_model.get(key, 0) < r.max_batch]
    if forming:
        return least_loaded(forming), BATCH
    if short:
        return least_loaded(short), WARM
    return least_loaded(eligible), (SPILL if warm else COLD)


def record_failure(replica, now, *, max_fails, fail_window, fail_timeout):
    """Rule (passive health, as NGINX's max_fails and fail_timeout): `max_fails` failures within
    `fail_window` seconds take a replica out for `fail_timeout` seconds. Returns True when this
    failure ejected it."""
    replica.failures.append(now)
    while replica.failures and replica.failures[0] <= now - fail_window:
        replica.failures.popleft()
    if len(replica.failures) >= max_fails and replica.ejected_until <= now:
        replica.ejected_until = now + fail_timeout
        replica.failures.clear()
        return True
    return False


def record_check(replica, ok, now, *, max_fails, fail_timeout):
    """Rule (active health): `max_fails` failed health checks in a row take a replica out for
    `fail_timeout` seconds (a replica that accepts connections but never answers fails each check
    only as often as checks time out, too seldom for the passive window); a passing check clears
    the count. Returns True when this check ejected it."""
    if ok:
        replica.failed_checks = 0
        return False
    replica.failed_checks += 1
    if replica.failed_checks >= max_fails and replica.ejected_until <= now:
        replica.ejected_until = now + fail_timeout
        replica.failed_checks = 0
        return True
    return False


def may_readmit(ejection_ends, now, check_passed):
    """Rule: an ejected replica comes back only when a health check passes after its time out (one
    still dead when its time is up gets no requests meanwhile)."""
    return check_passed and now >= ejection_ends


# What a replica answers when it refused a request without running the model: (status, error).
NOT_RUN = {
    (503, "no_room"): None,  # every other model there is in use or pinned: not the replica's fault
    (422, "model_too_large"): None,  # over this replica's budget; another may have a larger one
    (503, "draining"): None,  # its booking is ending: it takes nothing new
    (503, "load_failed"): "failure",  # it could not read the weights: counts against it
    (409, "weights_mismatch"): "eject",  # its file is not the registry's bytes: out at once
}


def refused_unrun(status, error):
    """Rule: a replica's refusal that proves the model did not run (NOT_RUN), so the request may go
    elsewhere (once, as may_retry says); None for any other answer. Returns what it means for the
    replica: None (nothing), "failure" (counts toward ejection) or "eject" (out at once), inside a
    tuple so that None means 'not such a refusal'."""
    key = (status, error)
    return (NOT_RUN[key],) if key in NOT_RUN else None


def counts_against(status):
    """Rule: an answer counts toward a replica's ejection (record_failure) only when it is a server
    error (5xx). A 4xx is the replica refusing the request, not failing: a bad body is the caller's
    400, and a client that keeps sending one must not take its team's replicas out. (A refusal that
    proves the replica itself is wrong, NOT_RUN's weights_mismatch, ejects it by refused_unrun.)"""
    return status >= 500


def may_retry(*, reached_model, retried):
    """Rule: a request that did not reach the model (the connection failed, or the replica refused
    it unrun: refused_unrun) is tried once more on another replica; one that may have reached the
    model is never sent twice."""
    return not reached_model and not retried
