"""The inference front door: one endpoint that sends each predict request to a replica chosen by
routing.policy, as an ASGI app (Starlette under uvicorn: `python -m routing`, or
`uvicorn routing.asgi:app`) so that a request waiting on a GPU holds a coroutine, not a Django worker.

    POST /api/v1/models/<name>/predict            the highest version a replica serves now
    POST /api/v1/models/<name>:<version>/predict  body: image/jpeg, image/png or {"images": [b64...]}
    GET  /healthz                                  no authentication
    GET  /metrics                                  METRICS_ALLOWED_IPS or Authorization: Bearer

Errors are JSON like the replica's: {"error": "<code>", "detail": "<sentence>", "field": "<field>"}.
"""

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import aiohttp
import httpx
from cachetools import TTLCache
from django.conf import settings
from django.db import Error as DatabaseError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.authtoken.models import Token
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from yarl import URL

from apibase.throttling import client_ip, failed_token_wait
from ops.access import metrics_allowed
from reservations.models import Membership
from serving.models import MODEL_NAME, Model
from serving.signing import sign

from . import policy, selectors
from .limits import TeamRateLimit
from .metrics import RouterMetrics
from .table import ReplicaTable, orm

log = logging.getLogger("routing")

NAME = re.compile(MODEL_NAME)
VERSION = re.compile(r"[1-9][0-9]{0,8}")  # as the replica reads it: ASCII digits, no leading zero
TOKEN_KEY = re.compile(r"[0-9a-fA-F]{1,64}")
MAX_BODY_BYTES = 32 * 1024 * 1024  # the replica's own default limit (serving.replica.config)
CACHE_SECONDS = 10  # a revoked token or a team left is seen within this
MODEL_CACHE_SECONDS = 3  # a model registered or deleted is seen within this
# Exceptions raised before the request's bytes left for the replica (no connection: refused, or not
# made or taken from the pool in time): safe to send elsewhere. Anything later may have reached the model.
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# What a replica may answer that is about the caller's request: passed on as it is. Any other error
# is a 502, counted against the replica only when it is a 5xx (policy.counts_against); its refusals
# that prove the model did not run (policy.refused_unrun) are checked first.
CALLER_ERRORS = (400, 413, 422)
# A body larger than this is hashed in a worker thread, not on the event loop (~0.8 ms per MiB).
HASH_IN_THREAD_BYTES = 256 * 1024
# Bad tokens remembered (so a retried bad token costs no query); bounded apart from the good ones,
# so a flood of made-up tokens neither grows memory nor evicts real callers.
MISSES_KEPT = 1024
CLIENT_CLOSED = 499  # as NGINX counts a client that went away before its answer
NOT_KEPT = object()


def replica_session():
    """The HTTP client for predicts (in an event loop)."""
    return aiohttp.ClientSession(
        # More connections than requests it may hold, so none waits on the pool; idle ones are
        # dropped before the replica's keep-alive (5 s) closes them under a request.
        connector=aiohttp.TCPConnector(limit=settings.ROUTER_MAX_QUEUE + 64, keepalive_timeout=2.0),
        # connect: a connection made or taken from the pool; sock_read: between bytes of the answer.
        timeout=aiohttp.ClientTimeout(total=None, connect=10.0, sock_connect=2.0, sock_read=settings.ROUTER_REQUEST_TIMEOUT_SECONDS),
        auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


class Refusal(Exception):
    """An answer other than the replica's: status, error code, a sentence, and the field at fault."""

    def __init__(self, status, error, detail, field=None, headers=None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.field, self.headers = status, error, detail, field, headers

    def response(self):
        body = {"error": self.error, "detail": self.detail, **({"field": self.field} if self.field else {})}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ReplicaFailed(Exception):
    """The request may have reached the replica, and then no answer came (never resent)."""


class NotReached(Exception):
    """The request did not reach the model (the replica could not be reached, or it refused the
    request unrun: policy.refused_unrun)."""


@dataclass
class Caller:
    user_id: int
    is_staff: bool
    team_ids: frozenset


@dataclass
class RouteTaken:
    """What the log line and the metrics say about one request."""

    model: str = ""
    replica: str = ""
    node: str = ""
    decision: str = ""


class Cached:
    """Lookups made in a thread (table.orm), each remembered for `seconds` in a cachetools TTLCache
    (bounded: keys come from requests). Lookups that found nothing (None) are kept in a smaller one
    of their own: keys made up by a caller evict only each other, never a real caller's."""

    def __init__(self, function, seconds=CACHE_SECONDS, size=10_000, misses=MISSES_KEPT, clock=time.monotonic):
        self.function = function
        self.found = TTLCache(size, seconds, timer=clock)
        self.missed = TTLCache(misses, seconds, timer=clock)

    async def __call__(self, *key):
        for kept in (self.found, self.missed):
            value = kept.get(key, NOT_KEPT)
            if value is not NOT_KEPT:
                return value
        value = await orm(self.function, *key)
        (self.found if value is not None else self.missed)[key] = value
        return value


def caller_for(key):
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    teams = frozenset(Membership.objects.filter(user_id=token.user_id).values_list("team_id", flat=True))
    return Caller(token.user_id, token.user.is_staff, teams)


def client_address(request):
    """The caller's address as the API counts it (apibase.throttling.client_ip: the connection's
    address, or with NUM_PROXIES the one the nearest trusted proxy saw)."""
    peer = request.client.host if request.client else ""
    return client_ip(SimpleNamespace(headers=request.headers, META={"REMOTE_ADDR": peer}))


def teams_with_model(name, team_ids):
    """[(team id, slug)] of the teams in `team_ids` (all teams: None) with a model `name`."""
    models = Model.objects.filter(name=name)
    if team_ids is not None:
        models = models.filter(team_id__in=team_ids)
    return list(models.values_list("team_id", "team__slug"))


def parse_ref(ref):
    name, colon, version = ref.partition(":")
    if not NAME.fullmatch(name):
        raise Refusal(400, "bad_request", f"{name!r} is not a model name (lower-case letters, digits, '.', '_', '-')", "name")
    if not colon:
        return name, None
    if not VERSION.fullmatch(version):
        raise Refusal(400, "bad_request", f"{version!r} is not a version: use a positive whole number (defects:3)", "version")
    return name, int(version)


class FrontDoor:
    """The app's state: the replica table, the HTTP clients to the replicas (aiohttp for predicts:
    its connection pool costs less per request than httpx's at high concurrency; httpx for the
    table's health checks), the limits."""

    def __init__(self):
        self.metrics = RouterMetrics()
        self.client = None
        self.session = None
        self.table = None
        self.limit = None
        self.task = None
        self.in_flight = 0
        self.team_in_flight = {}  # team id -> its requests held here (absent: none)
        self.caller = Cached(caller_for)
        self.teams_with_model = Cached(teams_with_model, seconds=MODEL_CACHE_SECONDS)
        self.registry_sha = Cached(selectors.registry_version)

    async def start(self):
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health check
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))  # health checks
        self.session = replica_session()
        self.limit = TeamRateLimit(settings.ROUTER_TEAM_RATE, settings.CACHE_URL)
        self.table = ReplicaTable(self.client, self.metrics)
        try:
            await self.table.reload()
        except Exception:  # the loop tries again every second; /healthz says 503 meanwhile
            log.exception("routing table: first load failed")
        self.task = asyncio.create_task(self.table.run())

    async def stop(self):
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()
        await self.session.close()
        await self.limit.close()

    # -- predict ---------------------------------------------------------------------------------

    async def predict(self, request):
        started = time.monotonic()
        route = RouteTaken()
        if self.in_flight >= settings.ROUTER_MAX_QUEUE:
            response = Refusal(
                429, "busy", f"this front door holds {settings.ROUTER_MAX_QUEUE} requests already: retry shortly",
                headers={"Retry-After": "1"},
            ).response()
        else:
            self.in_flight += 1
            self.metrics.in_flight.inc()
            try:
                response = await self._predict(request, route, started)
            except Refusal as refusal:
                response = refusal.response()
            except ClientDisconnect:  # the caller went away mid-upload: nobody to answer
                log.info("%s %s: the client went away before its body was read", request.method, request.url.path)
                response = Response(status_code=CLIENT_CLOSED)
            except DatabaseError as exc:  # the database is down: say so, never a bare 500
                log.error("predict: database error: %s", exc)
                response = Refusal(
                    503, "unavailable", "the front door could not check this request (its database is unreachable): "
                    "retry shortly", headers={"Retry-After": self._retry_seconds()},
                ).response()
            except Exception:
                log.exception("predict failed")
                response = Refusal(
                    503, "unavailable", "the front door failed on this request: retry shortly",
                    headers={"Retry-After": self._retry_seconds()},
                ).response()
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
        elapsed = time.monotonic() - started
        self.metrics.requests.labels(route.model, str(response.status_code), route.replica).inc()
        self.metrics.latency.labels(route.model).observe(elapsed)
        log.info(
            "%s %s %s %s replica=%s node=%s route=%s %.1fms", request.method, request.url.path,
            route.model or "-", response.status_code, route.replica or "-", route.node or "-",
            route.decision or "-", elapsed * 1000,
        )
        return response

    async def _predict(self, request, route, started):
        caller = await self._authenticate(request)
        name, version = parse_ref(request.path_params["ref"])
        team_id = await self._team(caller, name, request.query_params.get("team"))
        route.model = name
        held = self.team_in_flight.get(team_id, 0)
        if held >= settings.ROUTER_TEAM_MAX_IN_FLIGHT:
            raise Refusal(429, "busy", f"your team has {held} requests in this front door already: retry shortly",
                          headers={"Retry-After": "1"})
        self.team_in_flight[team_id] = held + 1
        try:
            return await self._predict_for(request, route, started, team_id, name, version)
        finally:
            left = self.team_in_flight.pop(team_id) - 1
            if left:
                self.team_in_flight[team_id] = left

    async def _predict_for(self, request, route, started, team_id, name, version):
        retry_after = await self.limit.hit(team_id)
        if retry_after:
            raise Refusal(429, "rate_limited", f"your team's rate ({settings.ROUTER_TEAM_RATE}) is used up: retry in {retry_after} s",
                          headers={"Retry-After": str(retry_after)})
        if version is None:
            version = policy.served_version(self.table.views(), team_id, name, self.table.registry, time.monotonic())
            if version is None:
                raise self._unavailable(f"no replica serves model {name} now")
        key = (name, version)
        sha = self.table.registry.get((team_id, name, version)) or await self.registry_sha(team_id, name, version)
        if sha is None:
            raise Refusal(404, "not_found", f"model {name} has no version {version}", "version")
        route.model = f"{name}:{version}"  # a label only once the registry has it: bounded series
        body = await self._body(request)
        if len(body) > HASH_IN_THREAD_BYTES:
            digest = await asyncio.to_thread(_sha256, body)
        else:
            digest = _sha256(body)
        content_type = request.headers.get("content-type", "application/octet-stream")
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "team"]

        tried, retried, refused = set(), False, []
        while True:
            now = time.monotonic()
            eligible = [r for r in policy.candidates(self.table.views(), team_id, key, sha, now) if r.id not in tried]
            replica, decision = policy.choose(eligible, key, queue_threshold=settings.ROUTER_QUEUE_THRESHOLD)
            if replica is None:
                if tried:
                    raise self._unavailable(f"no other replica can take {name}:{version} now (replica "
                                            f"{'; '.join(refused)})")
                raise self._unavailable(f"no replica can take {name}:{version} now")
            decision = policy.RETRY if retried else decision
            self.metrics.decisions.labels(decision).inc()
            route.replica, route.node, route.decision = str(replica.id), replica.node, decision
            if not tried:
                self.metrics.queue_seconds.observe(time.monotonic() - started)
            try:
                status, payload = await self._send(replica, key, body, digest, content_type, query)
            except NotReached as exc:
                log.warning("replica %s (%s) did not take %s:%s: %s", replica.id, replica.address, name, version, exc)
                tried.add(replica.id)
                refused.append(f"{replica.id}: {exc}")
                if policy.may_retry(reached_model=False, retried=retried):
                    retried = True
                    continue
                raise self._unavailable(f"the replicas tried for {name}:{version} did not take it ({'; '.join(refused)})") from None
            return self._answer(replica, decision, status, payload, name, version, sha)

    async def _authenticate(self, request):
        """The caller of a valid token, always. A bad one is counted per client address, as the
        API counts them and in the same cache (apibase.throttling.failed_token_wait): past
        API_THROTTLE_FAILED_TOKEN it is a 429 with Retry-After instead of the 401."""
        sent = request.headers.get("authorization")
        scheme, _, key = (sent or "").partition(" ")
        key = key.strip()
        caller = None
        if scheme.lower() == "token" and TOKEN_KEY.fullmatch(key):
            caller = await self.caller(key)
        if caller is not None:
            return caller
        if sent is not None:
            wait = await orm(failed_token_wait, client_address(request))
            if wait is not None:
                raise Refusal(429, "throttled", f"too many bad tokens from your address: retry in {wait} s",
                              headers={"Retry-After": str(wait)})
        raise Refusal(401, "unauthorized", "send your API token: Authorization: Token <key>",
                      headers={"WWW-Authenticate": "Token"})

    async def _team(self, caller, name, slug):
        """The team whose model `name` the caller uses: one of the caller's teams (any, for staff)."""
        # Cached by the caller's teams too: someone who just joined a team is not refused for a while.
        mine = await self.teams_with_model(name, None if caller.is_staff else caller.team_ids)
        if slug is not None:
            mine = [(team, s) for team, s in mine if s == slug]
        if not mine:
            # One answer whether no team has it or only others do: names of other teams' models
            # are not to be found out by asking.
            raise Refusal(403, "forbidden", f"there is no model {name!r} that your teams may use", "name")
        if len(mine) > 1:
            raise Refusal(400, "bad_request", f"model {name} exists in teams {', '.join(sorted(s for _, s in mine))}: "
                          "name one with ?team=<slug>", "team")
        return mine[0][0]

    async def _body(self, request):
        try:
            return await asyncio.wait_for(self._read_body(request), settings.ROUTER_BODY_SECONDS)
        except TimeoutError:
            raise Refusal(408, "timeout", f"the body did not arrive within {settings.ROUTER_BODY_SECONDS:g} s", "body") from None

    async def _read_body(self, request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise Refusal(413, "too_large", f"the body may be {MAX_BODY_BYTES} bytes at most", "body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Refusal(413, "too_large", f"the body may be {MAX_BODY_BYTES} bytes at most", "body")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _send(self, replica, key, body, digest, content_type, query):
        """POST the request to `replica`, counted as in flight there. NotReached when it never got
        there or the replica refused it without running the model (policy.refused_unrun); any other
        failure is a 502 that is never resent."""
        name, version = key
        # The path and query exactly as they go on the wire: that is what is signed.
        path = quote(f"/v1/models/{name}:{version}/predict", safe="/:") + (f"?{urlencode(query)}" if query else "")
        headers = {"Content-Type": content_type, **sign(replica.token, "POST", path, body, digest=digest)}
        replica.outstanding += 1
        replica.outstanding_by_model[key] = replica.outstanding_by_model.get(key, 0) + 1
        try:
            status, content = await self._post(f"http://{replica.address}{path}", body, headers)
        except NotReached:
            self.table.failure(replica)
            raise
        except ReplicaFailed as exc:
            self.table.failure(replica)
            raise Refusal(
                502, "replica_failed", f"replica {replica.id} on {replica.node} failed after the request reached it "
                f"({exc}); it was not resent, as it may have reached the model",
            ) from None
        finally:
            replica.outstanding -= 1
            replica.outstanding_by_model[key] -= 1
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        if status != 200:
            error = payload.get("error") if isinstance(payload, dict) else None
            refusal = policy.refused_unrun(status, error)
            if refusal is not None:
                self._refused(replica, status, error, refusal[0])
                raise NotReached(f"it refused it unrun ({status} {error})")
        return status, payload

    async def _post(self, url, body, headers):
        """(status, body) of one POST; NotReached when nothing was sent (NOT_SENT), ReplicaFailed
        when it may have been (the connection broke, or no answer within the request timeout)."""
        try:
            async with self.session.post(URL(url, encoded=True), data=body, headers=headers) as answer:
                return answer.status, await answer.read()
        except NOT_SENT as exc:
            raise NotReached(str(exc) or type(exc).__name__) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReplicaFailed(type(exc).__name__) from None

    def _refused(self, replica, status, error, meaning):
        """What a refusal unrun means for the replica: nothing, a failure, or out at once."""
        if error == "draining":
            self.table.draining(replica)
        if meaning == "failure":
            self.table.failure(replica)
        elif meaning == "eject":
            self.table.eject(replica, f"it refused a request with {status} {error}")

    def _answer(self, replica, decision, status, payload, name, version, sha):
        where = {"replica": replica.id, "node": replica.node}
        if status == 200 and isinstance(payload, dict):
            if payload.get("sha256") != sha:
                self.table.eject(replica, f"it answered {name}:{version} with sha256 {payload.get('sha256')}, the registry has {sha}")
                raise Refusal(502, "inconsistent_replica", f"replica {replica.id} on {replica.node} answered with other "
                              f"bytes than the registry's for {name}:{version}; it is out")
            return JSONResponse({**payload, **where, "route": decision})
        if status in CALLER_ERRORS and isinstance(payload, dict):
            return JSONResponse({**payload, **where}, status_code=status)
        if policy.counts_against(status):
            self.table.failure(replica)
        detail = payload.get("detail") if isinstance(payload, dict) else None
        raise Refusal(502, "replica_error", f"replica {replica.id} on {replica.node} answered {status}"
                      + (f": {detail}" if detail else ""))

    def _retry_seconds(self):
        return str(max(1, math.ceil(settings.ROUTER_HEALTH_SECONDS)))

    def _unavailable(self, detail):
        return Refusal(503, "no_replica", detail, headers={"Retry-After": self._retry_seconds()})

    # -- the rest --------------------------------------------------------------------------------

    async def healthz(self, request):
        table = self.table
        age = None if table.reloaded_at is None else time.monotonic() - table.reloaded_at
        states = {}
        for view in table.views():
            states[table.state_of(view)] = states.get(table.state_of(view), 0) + 1
        fresh = age is not None and age < 10
        body = {"status": "ok" if fresh else "stale", "table_age_seconds": None if age is None else round(age, 1),
                "replicas": states, "in_flight": self.in_flight}
        return JSONResponse(body, status_code=200 if fresh else 503)

    async def metrics_view(self, request):
        peer = request.client.host if request.client else ""
        if not metrics_allowed(request.headers, peer):
            return Response("Metrics are for the monitoring system.\n", status_code=403, media_type="text/plain")
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _sha256(body):
    return hashlib.sha256(body).hexdigest()


def build_app():
    door = FrontDoor()

    @asynccontextmanager
    async def lifespan(app):
        await door.start()
        try:
            yield
        finally:
            await door.stop()

    app = Starlette(
        routes=[
            Route("/api/v1/models/{ref}/predict", door.predict, methods=["POST"]),
            Route("/healthz", door.healthz, methods=["GET"]),
            Route("/metrics", door.metrics_view, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.door = door
    return app
