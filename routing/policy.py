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


def served_version(replicas, team_id, name, now):
    """Rule: a model named without a version means the highest version that a healthy replica of
    the team serves now (None: none does). Every response names the version (and hash) it used."""
    versions = [
        version
        for replica in replicas
        if replica.team_id == team_id and is_healthy(replica, now)
        for (served, version) in replica.serves
        if served == name
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


def may_retry(*, reached_replica, retried):
    """Rule: a request that could not reach its replica (the connection failed) is tried once more
    on another; one that reached it may have reached the model, and is never sent twice."""
    return not reached_replica and not retried
