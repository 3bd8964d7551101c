#!/usr/bin/env python
"""Where a booking's time goes: `POST /api/v1/reservations/` (one GPU, one slot, each request on a
(GPU, slot) no other uses, as booking_load's phase B) next to `GET /api/v1/me/`, called in this process
through Django's WSGI application, as gunicorn calls it, against PostgreSQL. No server, no network, no
client: only the Python the web worker runs and its waits on the database.

    .venv/bin/python bench/booking_profile.py [--requests 2000] [--rounds 3] [--variants] [--no-layers]
                                              [--db gpu_bench_profile]

First both requests are timed without a profiler, rounds interleaved: wall time, this process's CPU
time and the CPU time of the database's backends per request (a saturated machine's throughput is
bounded by CPU time: booking_load's ratio is about me CPU / booking CPU once the same HTTP and client
costs are added to both). With --variants, the booking is timed again with issue 19's changes
undone one at a time and together (the code before them), rounds interleaved. Then the booking runs `--requests` times with the functions that begin each
layer wrapped in timers (middleware, authentication and throttling, parsing, validation, the
service's steps, rendering, SQL compilation, the statements): wall and CPU time per layer, at a cost
of a few dozen microseconds a request. Last, the booking and `GET /api/v1/me/` each run under cProfile
timed by CPU time: where the CPU goes by package (Django's ORM, psycopg, DRF, ...) and the functions
with the most cumulative and own time. cProfile multiplies the cost of small Python calls several
times over, so its shares overweight code made of many small calls (field copies, the ORM's
compiler); the wrapped layers are the figures to quote. The function calls per request it counts do
not depend on how busy the machine is.

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); drops and recreates `--db`.
"""

import argparse
import copy
import cProfile
import functools
import importlib
import inspect
import io
import json
import math
import os
import pstats
import statistics
import sys
import time
from types import SimpleNamespace

from django.utils.functional import cached_property as django_cached_property

from benchlib import REPO, in_process_env, machine, migrate, recreate_database
from booking_load_clients import BOOK_URL, ME_URL, iso_z
from booking_load_cpu import cpu_snapshot
from booking_load_setup import seed

# The booking's layers: (indent, label, functions), each function "module:attribute path" as the code
# calls it (a name imported into the caller's module is patched there). A row's functions share one
# meter, which counts only the outermost call, so nothing in a row is counted twice.
LAYERS = [
    (0, "whole request (WSGIHandler.__call__)", ["django.core.handlers.wsgi:WSGIHandler.__call__"]),
    (1, "middleware chain and view (BaseHandler.get_response)", ["django.core.handlers.base:BaseHandler.get_response"]),
    (2, "URL resolving", ["django.core.handlers.base:BaseHandler.resolve_request"]),
    (2, "DRF view (APIView.dispatch)", ["rest_framework.views:APIView.dispatch"]),
    (3, "request wrapper (initialize_request)", ["rest_framework.views:APIView.initialize_request"]),
    (3, "authentication: token lookup (perform_authentication)", [
        "rest_framework.views:APIView.perform_authentication",
    ]),
    (3, "permissions (check_permissions)", ["rest_framework.views:APIView.check_permissions"]),
    (3, "throttles (check_throttles)", ["rest_framework.views:APIView.check_throttles"]),
    (3, "content negotiation", ["rest_framework.views:APIView.perform_content_negotiation"]),
    (3, "view method (ReservationViewSet.create)", ["reservations.api.views:ReservationViewSet.create"]),
    (4, "parsing the body (Request._parse)", ["rest_framework.request:Request._parse"]),
    (4, "input serializer: is_valid (fields included)", ["rest_framework.serializers:BaseSerializer.is_valid"]),
    (4, "idempotency wrapper (idempotent_create)", ["reservations.api.views:idempotent_create"]),
    (5, "service (reservation_create)", ["reservations.services:reservation_create"]),
    (6, "team (policy.resolve_team: a query)", ["reservations.policy:resolve_team"]),
    (6, "work check (jobs.work_kinds.check)", ["reservations.jobs:BookingWork.check"]),
    (6, "window (policy.validate_window)", ["reservations.policy:validate_window"]),
    (6, "the transaction (records.attempt)", ["reservations.services.booking:attempt"]),
    (7, "atomic() entered (BEGIN goes out with the first statement)", ["django.db.transaction:Atomic.__enter__"]),
    (7, "quota row lock and decision (quota_decide)", ["reservations.services.booking:quota_decide"]),
    (7, "GPU lock and check (bookable_gpus)", ["reservations.services.booking:bookable_gpus"]),
    (7, "conflict check (selectors.any_overlapping, before: overlapping_allocations().exists())", [
        "reservations.selectors:any_overlapping", "django.db.models.query:QuerySet.exists",
    ]),
    (7, "writes (Booking.write)", ["reservations.services.records:Booking.write"]),
    (8, "insert reservation (Model.save)", ["django.db.models:Model.save"]),
    (8, "insert allocations (bulk_create)", ["django.db.models.query:QuerySet.bulk_create"]),
    (8, "work rows (jobs.work_kinds.create)", ["reservations.jobs:BookingWork.create"]),
    (8, "audit snapshot (audit.snapshot)", ["reservations.services.records:snapshot"]),
    (8, "audit insert (audit_record)", ["reservations.services.records:audit_record"]),
    (7, "COMMIT and on_commit hooks (Atomic.__exit__)", ["django.db.transaction:Atomic.__exit__"]),
    (5, "response body (ReservationSerializer(...).data)", ["reservations.api.views:ReservationViewSet._render"]),
    (5, "Response()", ["rest_framework.response:Response.__init__"]),
    (3, "finalize_response", ["rest_framework.views:APIView.finalize_response"]),
    (2, "JSON rendering (Response.rendered_content)", ["rest_framework.response:Response.rendered_content"]),
    (1, "response close: request_finished (close_old_connections)", ["django.http.response:HttpResponseBase.close"]),
    (0, "across layers: SQL compilation (SQL*Compiler.as_sql)", [
        "django.db.models.sql.compiler:SQLCompiler.as_sql",
        "django.db.models.sql.compiler:SQLInsertCompiler.as_sql",
        "django.db.backends.postgresql.compiler:SQLInsertCompiler.as_sql",
    ]),
    (0, "across layers: serializer fields, input and response (Serializer.fields)", [
        "rest_framework.serializers:Serializer.fields",
    ]),
    (0, "across layers: statements sent and answered (CursorWrapper.execute)", [
        "django.db.backends.utils:CursorWrapper.execute",
        "django.db.backends.utils:CursorWrapper.executemany",
    ]),
]


class Meter:
    """Wall and CPU seconds spent in the functions it wraps, outermost calls only."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.depth = 0

    def wrap(self, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            if self.depth:
                return func(*args, **kwargs)
            self.depth += 1
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu
                self.depth -= 1

        return timed


def patch(target, make):
    """Put make(original) in place of the function `target` ("module:attribute path"); returns what
    undoes it. A function this checkout does not have (the script run on an older one) is left alone."""
    module, _, path = target.partition(":")
    *parents, name = path.split(".")
    owner = importlib.import_module(module)
    for parent in parents:
        owner = getattr(owner, parent)
    try:
        original = inspect.getattr_static(owner, name)
    except AttributeError:
        return lambda: None
    replacement = make(original)
    if hasattr(replacement, "__set_name__"):  # a cached property learns the name it caches under
        replacement.__set_name__(owner, name)
    setattr(owner, name, replacement)
    return lambda: setattr(owner, name, original)


def timed_by(meter):
    """For patch(): the original function, method, property or cached property, timed by `meter`."""

    def make(original):
        if isinstance(original, (functools.cached_property, django_cached_property)):
            return type(original)(meter.wrap(original.func))
        if isinstance(original, property):
            return property(meter.wrap(original.fget), original.fset, original.fdel)
        return meter.wrap(original)

    return make


# Issue 19's changes undone, one at a time and together, to measure in one process what each buys
# (--variants): the code before them was exactly DRF's deep copy of the declared fields and the ORM's
# exists() for the conflict check.
def _deep_copied_fields(self):
    return copy.deepcopy(self._declared_fields)


def _orm_conflict_check(gpu_ids, start, end):
    return importlib.import_module("reservations.selectors").overlapping_allocations(gpu_ids, start, end).exists()


UNDONE = {
    "DRF's deep field copies": [("apibase.serializers:PlainFieldsMixin.get_fields", lambda _: _deep_copied_fields)],
    "the ORM's conflict check": [("reservations.selectors:any_overlapping", lambda _: _orm_conflict_check)],
}
VARIANTS = {"as committed": [], **{f"with {name}": undo for name, undo in UNDONE.items()},
            "with both (the code before)": [step for undo in UNDONE.values() for step in undo]}


def metered(n, request):
    """`n` calls of `request` with every layer's functions wrapped: {row label: Meter}. A wrapper
    costs a microsecond or two a call, and a booking makes a few dozen such calls."""
    meters = {label: Meter() for _, label, _ in LAYERS}
    undo = [patch(target, timed_by(meters[label])) for _, label, targets in LAYERS for target in targets]
    try:
        for _ in range(n):
            request()
        return meters
    finally:
        for step in reversed(undo):
            step()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="requests of each kind per round and profiled")
    p.add_argument("--rounds", type=int, default=3, help="unprofiled timing rounds")
    p.add_argument("--db", default="gpu_bench_profile", help="database to drop and recreate")
    p.add_argument("--top", type=int, default=20, help="functions listed by cumulative and by own time")
    p.add_argument("--variants", action="store_true",
                   help="also time the booking with issue 19's changes undone (rounds interleaved)")
    p.add_argument("--layers", action=argparse.BooleanOptionalAction, default=True,
                   help="after the timing, the wrapped layers and the profiles")
    return p.parse_args()


class Caller:
    """Calls the WSGI application the way gunicorn does, with what booking_load's clients send."""

    def __init__(self, app, token):
        self.app = app
        self.token = token

    def __call__(self, method, path, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "testserver", "HTTP_ACCEPT": "*/*",
            "HTTP_ACCEPT_ENCODING": "gzip, deflate", "HTTP_USER_AGENT": "python-requests/2",
            "HTTP_CONNECTION": "keep-alive", "HTTP_AUTHORIZATION": f"Token {self.token}",
            "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        }
        if body is not None:
            environ.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(data)))
        status = []
        result = self.app(environ, lambda s, headers, exc_info=None: status.append(s))
        try:
            b"".join(result)
        finally:
            result.close()  # request_finished, as the server sends it
        return int(status[0][:3])


def booking_bodies(gpu_ids, slot_s, horizon_days, needed):
    """Bodies for `needed` one-GPU one-slot bookings that never overlap: every GPU at the slot after
    next, then the one after, as far as the horizon allows (a slot's margin at each end)."""
    first = (math.floor(time.time() / slot_s) + 2) * slot_s
    n_slots = int((horizon_days * 86400 - 3 * slot_s) // slot_s)
    if n_slots * len(gpu_ids) < needed:
        raise SystemExit(f"only {n_slots * len(gpu_ids)} distinct (GPU, slot) pairs for {needed} bookings")
    for k in range(n_slots):
        for gpu in gpu_ids:
            yield {"gpus": [gpu], "start": iso_z(first + k * slot_s), "slots": 1}


def timed(n, request, cpu):
    """Per request: (wall ms, this process's CPU ms, the database backends' CPU ms). The process's CPU
    time is the scheduler's to the nanosecond; the backends' comes from /proc in clock ticks."""
    wall, python, pg = time.perf_counter(), time.process_time(), cpu()["postgres"]
    for _ in range(n):
        request()
    wall, python, pg = time.perf_counter() - wall, time.process_time() - python, cpu()["postgres"] - pg
    return wall / n * 1000, python / n * 1000, pg / n * 1000


def variant_timings(args, book, cpu):
    """{variant: [timed() per round]}, the variants taking turns round by round, so that a slower
    moment of a shared machine hits them all alike."""
    timings = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, steps in VARIANTS.items():
            undo = [patch(target, make) for target, make in steps]
            try:
                timings[name].append(timed(args.requests, book, cpu))
            finally:
                for step in reversed(undo):
                    step()
    return timings


def print_variants(timings):
    print("\nbooking per request with issue 19's changes undone, median of the rounds (best in brackets):")
    print(f"{'variant':40} {'wall ms':>16} {'Python CPU ms':>16} {'PostgreSQL CPU ms':>18} {'CPU ms':>8} {'vs committed':>12}")
    committed = None
    for name, rounds in timings.items():
        columns = list(zip(*rounds))
        wall, python, pg = (statistics.median(c) for c in columns)
        committed = committed or python + pg
        print(f"{name:40} {wall:7.3f} ({min(columns[0]):6.3f}) {python:7.3f} ({min(columns[1]):6.3f})"
              f" {pg:9.3f} ({min(columns[2]):6.3f}) {python + pg:8.3f} {(python + pg) / committed - 1:+11.1%}")


def statements(request):
    """The SQL one call of `request` sends through the ORM: BEGIN and COMMIT are not among them (the
    test utilities' CaptureQueriesContext would see nothing: request_started resets its log)."""
    from django.db import connection

    sent = []

    def record(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        request()
    return sent


def short(key):
    filename, line, name = key
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{filename}:{line}({name})"


def print_layers(meters, n):
    whole = meters[LAYERS[0][1]]
    print(f"{'layer (booking, timed by wrappers)':70} {'wall ms':>8} {'share':>6} {'CPU ms':>8} {'share':>6}")
    for indent, label, _ in LAYERS:
        m = meters[label]
        print(f"{'  ' * indent + label:70} {m.wall / n * 1000:8.3f} {m.wall / whole.wall * 100:5.1f}%"
              f" {m.cpu / n * 1000:8.3f} {m.cpu / whole.cpu * 100:5.1f}%")


def print_top(stats, n, total_s, top, sort_index, title):
    print(f"\n{title}")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][sort_index], reverse=True)[:top]
    for key, (cc, nc, tt, ct, _) in rows:
        value = (tt, ct)[sort_index - 2]
        print(f"  {value / n * 1000:7.3f} ms/req {value / total_s * 100:5.1f}%  {nc / n:6.1f} calls/req  {short(key)}")


# Own time by where the code lives, most specific first.
PACKAGES = [
    ("Django ORM: query building and SQL compilation", ("django/db/models/sql/", "django/db/models/expressions.py",
                                                        "django/db/models/lookups.py", "django/db/models/query_utils.py",
                                                        "django/db/models/fields/related_lookups.py")),
    ("Django ORM: querysets, models, fields", ("django/db/models/",)),
    ("Django database backend and transactions", ("django/db/",)),
    ("psycopg", ("psycopg/",)),
    ("DRF", ("rest_framework/",)),
    ("Django request handling, middleware, HTTP", ("django/core/", "django/http/", "django/middleware/",
                                                   "django/urls/", "django/views/", "django/contrib/")),
    ("Django utils, dispatch, conf", ("django/",)),
    ("third-party middleware (axes, csp, whitenoise)", ("axes/", "csp/", "whitenoise/")),
    ("this project", ("reservations/", "apibase/", "trainer/", "serving/", "ops/", "web/", "scheduler/")),
    ("standard library (copy, json, datetime, ...)", ("/lib/python3",)),
    ("builtins", ("~",)),
]


def print_packages(stats, n, total_s):
    own = {label: 0.0 for label, _ in PACKAGES}
    own["other"] = 0.0
    for (filename, _, _), (_, _, tt, _, _) in stats.stats.items():
        label = next((label for label, parts in PACKAGES if any(p in filename for p in parts)), "other")
        own[label] += tt
    print("\nown time by where the code lives")
    for label, seconds in sorted(own.items(), key=lambda item: -item[1]):
        print(f"  {label:55} {seconds / n * 1000:7.3f} ms/req {seconds / total_s * 100:5.1f}%")


def profile(n, request):
    """`n` calls of `request` under cProfile timed by CPU time: the waits on PostgreSQL do not count."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(n):
        request()
    profiler.disable()
    return pstats.Stats(profiler)


def main():
    args = parse_args()
    # One connection all along (as a busy gunicorn worker keeps its own), so that its backend's CPU
    # time is counted whole: with the default 60 s, request_finished would close it mid-run.
    env = in_process_env(args.db, BOOKING_HORIZON_DAYS="365", LOG_LEVEL="WARNING", DB_CONN_MAX_AGE="3600")
    print(f"setting up database {args.db} ...", flush=True)
    version = recreate_database(args.db)
    migrate(env={**os.environ, **env})
    # booking_load's inventory: 16 nodes x 4 GPUs, one team, users with tokens; sets Django up with env.
    gpu_ids, tokens, slot_hours, horizon_days = seed(SimpleNamespace(nodes=16, gpus_per_node=4), env, 1)

    from django.core.wsgi import get_wsgi_application

    call = Caller(get_wsgi_application(), tokens[0])
    # The rounds, the variants' rounds, the wrapped run and the profiled one, the warm-up and the
    # statement count.
    rounds = args.rounds * (1 + (len(VARIANTS) if args.variants else 0)) + 2
    bodies = booking_bodies(gpu_ids, slot_hours * 3600, horizon_days, rounds * args.requests + 201)

    def me():
        assert call("GET", ME_URL) == 200

    def book():
        status = call("POST", BOOK_URL, next(bodies))
        assert status == 201, status

    for _ in range(200):  # warm up: imports, connection, caches
        me()
        book()
    booking_sql, me_sql = statements(book), statements(me)

    # The CPU time of the database's backends (this process plays gunicorn's worker).
    cpu = lambda: cpu_snapshot(os.getpid(), args.db)  # noqa: E731
    timings = {"me": [], "booking": []}
    for _ in range(args.rounds):
        timings["me"].append(timed(args.requests, me, cpu))
        timings["booking"].append(timed(args.requests, book, cpu))

    print(f"machine  : {machine()}; PostgreSQL {version}; {REPO.name}")
    print(f"load     : {args.requests} requests of each kind per round, {args.rounds} rounds, in process (WSGI)")
    print(f"statements: booking {len(booking_sql)}, me {len(me_sql)}")
    for sql in booking_sql:
        print(f"    {sql[:120]}")
    print("per request, median of the rounds (best in brackets):")
    print(f"{'request':10} {'wall ms':>16} {'Python CPU ms':>16} {'PostgreSQL CPU ms':>18} {'CPU ms':>8}")
    medians = {}
    for name, rounds in timings.items():
        columns = list(zip(*rounds))
        wall, python, pg = (statistics.median(c) for c in columns)
        medians[name] = python + pg
        print(f"{name:10} {wall:7.3f} ({min(columns[0]):6.3f}) {python:7.3f} ({min(columns[1]):6.3f})"
              f" {pg:9.3f} ({min(columns[2]):6.3f}) {python + pg:8.3f}")
    print(f"ratio of CPU per request, me / booking: {medians['me'] / medians['booking']:.2f}"
          " (booking_load's ratio adds the same HTTP and client costs to both)")

    if args.variants:
        print_variants(variant_timings(args, book, cpu))
    if not args.layers:
        return
    # Wall time shows the waits on PostgreSQL (and on the CPU, when the machine is busy); CPU time
    # what the worker itself spends, which is what bounds throughput on a saturated machine.
    print()
    print_layers(metered(args.requests, book), args.requests)
    for title, request in (("booking", book), ("me", me)):
        stats = profile(args.requests, request)
        total = next(ct for (filename, _, name), (_, _, _, ct, _) in stats.stats.items()
                     if filename.endswith("django/core/handlers/wsgi.py") and name == "__call__")
        calls = sum(nc for _, nc, _, _, _ in stats.stats.values())
        print(f"\n=== {title}: {total / args.requests * 1000:.3f} ms of CPU per request under cProfile,"
              f" {calls / args.requests:.0f} function calls per request (a count, not a timing) ===")
        print_packages(stats, args.requests, total)
        print_top(stats, args.requests, total, args.top, 3, "by cumulative CPU time")
        print_top(stats, args.requests, total, args.top, 2, "by own CPU time")


if __name__ == "__main__":
    main()
