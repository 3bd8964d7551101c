"""The front door's live view of its replicas: what the database says (reloaded every second or so)
merged with what the replicas say (a signed GET /v1/status to each every ROUTER_HEALTH_SECONDS) and
what this front door has seen (requests in flight, failures, ejections).

The ReplicaView objects are kept across reloads, merged by id, so the router's own accounting
survives them; a replica gone from the database drops out. The rules themselves are routing.policy's:
this module only keeps their inputs current and applies the ejection one.
"""

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from serving import signing

from . import policy, selectors

log = logging.getLogger("routing")

RELOAD_SECONDS = 1.0
# A replica busy with inference may answer its status slowly: a check gets this long before it
# fails, and never longer than the time between checks (at least a second), so that failed checks
# in a row (policy.record_check) eject a hung replica within a few intervals.
HEALTH_TIMEOUT_SECONDS = 5.0
# The ORM runs in this many threads of its own: each may hold a database connection, so a front door
# holds at most this many (the default executor would take up to 32).
ORM_THREADS = 4
_ORM_POOL = ThreadPoolExecutor(ORM_THREADS, thread_name_prefix="router-orm")
STATES = ("ready", "loading", "draining", "ejected", "offline")


async def orm(function, *args):
    """Run a function that uses the ORM in a worker thread, with a usable connection there (the
    event loop never blocks on the database)."""

    def call():
        close_old_connections()
        try:
            return function(*args)
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_ORM_POOL, call)


def health_timeout():
    return min(HEALTH_TIMEOUT_SECONDS, max(1.0, settings.ROUTER_HEALTH_SECONDS))


class ReplicaTable:
    """`views()`: the ReplicaViews to route over. `run()` keeps them current until cancelled.
    `failure(view)` and `eject(view)` are how the front door reports a replica that failed it."""

    def __init__(self, client, metrics=None, *, load=selectors.routable_replicas, clock=time.monotonic):
        self.client = client
        self.metrics = metrics
        self.load = load
        self.clock = clock
        self._views = {}  # id -> ReplicaView
        self.registry = {}  # (team id, name, version) -> sha256
        self._db_state = {}  # id -> "ready" | "draining", as the database says
        self._reported = {}  # id -> (state, resident) from its last successful check
        self._ejected = {}  # id -> monotonic time its ejection ends (it comes back on a check after)
        self.reloaded_at = None  # monotonic time of the last successful reload

    # -- reading -------------------------------------------------------------------------------

    def views(self):
        return list(self._views.values())

    def get(self, replica_id):
        return self._views.get(replica_id)

    def state_of(self, view):
        """One word for the health gauge and /healthz."""
        if not view.node_online:
            return "offline"
        if view.id in self._ejected:
            return "ejected"
        return view.state if view.state in STATES else "draining"

    # -- the database ----------------------------------------------------------------------------

    async def reload(self):
        fresh, registry = await orm(self.load, timezone.now())
        self.merge(fresh, registry)
        self.reloaded_at = self.clock()

    def merge(self, fresh, registry):
        """Take the database's view of each replica, keeping the router's own state of those it
        knew; a replica the database no longer lists is dropped (its requests in flight finish)."""
        views = {}
        for new in fresh:
            view = self._views.get(new.id)
            if view is None:
                view = new
            else:
                for name in ("address", "token", "node", "team_id", "weight", "max_batch", "serves", "node_online"):
                    setattr(view, name, getattr(new, name))
            self._db_state[new.id] = new.state
            reported = self._reported.get(new.id)
            # What the replica said at its last check is fresher than what its supervisor wrote.
            view.resident = reported[1] if reported else new.resident
            view.state = self._combined_state(new.id)
            views[new.id] = view
        for gone in self._views.keys() - views.keys():
            self._db_state.pop(gone, None)
            self._reported.pop(gone, None)
            self._ejected.pop(gone, None)
        self._views = views
        self.registry = registry
        self._publish()

    def _combined_state(self, replica_id):
        """Ready only when both the database (booking, replica row) and the replica itself say so."""
        db_state = self._db_state.get(replica_id, "draining")
        reported = self._reported.get(replica_id)
        if db_state != "ready":
            return db_state
        return reported[0] if reported and reported[0] in ("loading", "draining") else "ready"

    # -- health ----------------------------------------------------------------------------------

    async def check_all(self):
        """Check every replica once, each on its own time limit (one round; `run` checks each
        replica in a loop of its own instead, so a slow one never delays the others)."""
        await asyncio.gather(*(self.check(view) for view in self.views()))
        self._publish()

    async def check(self, view):
        """Active health check: the replica's signed status within health_timeout(). Failed checks
        in a row eject it (policy.record_check); an ejected replica comes back only on a check that
        passes after its time (policy.may_readmit)."""
        path = "/v1/status"
        try:
            response = await asyncio.wait_for(
                self.client.get(f"http://{view.address}{path}", headers=signing.sign(view.token, "GET", path)),
                health_timeout(),
            )
            response.raise_for_status()
            status = response.json()
            state = status["state"]
            resident = {
                (m["name"], m["version"]): m["sha256"] for m in status.get("models", []) if m.get("resident")
            }
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            if view.id not in self._ejected and self._views.get(view.id) is view:
                log.warning("replica %s (%s) failed its health check: %s", view.id, view.address,
                            str(exc) or type(exc).__name__)
                ejected = policy.record_check(view, False, self.clock(), max_fails=settings.ROUTER_MAX_FAILS,
                                              fail_timeout=settings.ROUTER_FAIL_TIMEOUT_SECONDS)
                if ejected:
                    self._hold_out(view, view.ejected_until, f"{settings.ROUTER_MAX_FAILS} failed health checks in a row")
            return False
        if self._views.get(view.id) is not view:  # dropped from the table while it was checked
            return True
        policy.record_check(view, True, self.clock(), max_fails=settings.ROUTER_MAX_FAILS,
                            fail_timeout=settings.ROUTER_FAIL_TIMEOUT_SECONDS)
        self._reported[view.id] = (state, resident)
        view.resident = resident
        view.state = self._combined_state(view.id)
        until = self._ejected.get(view.id)
        if until is not None and policy.may_readmit(until, self.clock(), check_passed=True):
            del self._ejected[view.id]
            view.ejected_until = 0.0
            view.failures.clear()
            log.info("replica %s (%s) readmitted after a successful health check", view.id, view.address)
        return True

    # -- failures ----------------------------------------------------------------------------------

    def failure(self, view):
        """One failure of `view` (a check, a connection, an error answer). Returns True when this one
        ejected it (policy.record_failure: ROUTER_MAX_FAILS within ROUTER_FAIL_WINDOW_SECONDS)."""
        now = self.clock()
        ejected = policy.record_failure(
            view, now, max_fails=settings.ROUTER_MAX_FAILS, fail_window=settings.ROUTER_FAIL_WINDOW_SECONDS,
            fail_timeout=settings.ROUTER_FAIL_TIMEOUT_SECONDS,
        )
        if ejected:
            self._hold_out(view, view.ejected_until, f"{settings.ROUTER_MAX_FAILS} failures")
        return ejected

    def eject(self, view, reason):
        """Take `view` out at once for ROUTER_FAIL_TIMEOUT_SECONDS (it answered with bytes other than
        the registry's)."""
        if view.id not in self._ejected:
            self._hold_out(view, self.clock() + settings.ROUTER_FAIL_TIMEOUT_SECONDS, reason)

    def draining(self, view):
        """`view` refused a request as draining: no more until a check says it is ready again."""
        state, resident = self._reported.get(view.id, ("ready", view.resident))
        self._reported[view.id] = ("draining", resident)
        view.state = self._combined_state(view.id)

    def _hold_out(self, view, until, reason):
        # The view stays out (ejected_until infinite) until a check succeeds after `until`, however
        # long that takes: a replica that is still dead when its time is up must not get requests.
        self._ejected[view.id] = until
        view.ejected_until = math.inf
        view.failures.clear()
        log.warning("replica %s (%s on %s) ejected: %s", view.id, view.address, view.node, reason)
        if self.metrics:
            self.metrics.decisions.labels("ejected").inc()
            self._publish()

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self):
        """Reload every RELOAD_SECONDS and check each replica every ROUTER_HEALTH_SECONDS, in a loop
        of its own, until cancelled."""
        checks = {}  # replica id -> its check loop
        try:
            await asyncio.gather(self._every(RELOAD_SECONDS, self.reload), self._keep_checking(checks))
        finally:
            for task in checks.values():
                task.cancel()
            await asyncio.gather(*checks.values(), return_exceptions=True)

    async def _keep_checking(self, checks):
        """Start a check loop for each replica in the table; end those of replicas gone from it."""
        while True:
            for replica_id in [i for i, task in checks.items() if i not in self._views or task.done()]:
                checks.pop(replica_id).cancel()
            for replica_id in self._views.keys() - checks.keys():
                checks[replica_id] = asyncio.create_task(self._check_every(replica_id))
            await asyncio.sleep(RELOAD_SECONDS)

    async def _check_every(self, replica_id):
        while (view := self._views.get(replica_id)) is not None:
            started = self.clock()
            try:
                await self.check(view)
                self._publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("routing table: checking replica %s failed", replica_id)
            await asyncio.sleep(max(0.05, settings.ROUTER_HEALTH_SECONDS - (self.clock() - started)))

    async def _every(self, seconds, step):
        while True:
            started = self.clock()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or a replica hiccupped: the next round tries again
                log.exception("routing table: %s failed", step.__name__)
            await asyncio.sleep(max(0.05, seconds - (self.clock() - started)))

    def _publish(self):
        if not self.metrics:
            return
        gauge = self.metrics.replica_state
        gauge.clear()
        for view in self._views.values():
            current = self.state_of(view)
            for state in STATES:
                gauge.labels(str(view.id), view.node, state).set(1 if state == current else 0)
