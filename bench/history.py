"""Years of history: what every page, API read, export and scrape costs with three years of history in
the database, next to a fresh one, measured in one run, alternating.

    .venv/bin/python bench/history.py [--bookings 1000000] [--rounds 15] [--reads calendar metrics ...]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); recreates the databases
`gpu_bench_fresh` and `gpu_bench_history` (left behind for inspection; --reuse measures them again
without building). Both hold the same present: 16 nodes x 4 GPUs, 8 teams with quotas, 64 people,
the bookings of the last 32 days and the next 4 (some with jobs, notices, their audit entries). The history database
also holds the past before it, written with SQL's generate_series in a few minutes:

- bookings: two-hour slots back to back on every GPU for up to three years (46 live bookings a
  slot over the 64 GPUs, 18 of them on two GPUs), the rest of the slot's bookings cancelled (their
  allocations not live), so the exclusion constraint holds;
- 5 audit entries a booking (create, activate, notice, a preemption every 40th, complete or cancel),
  1 notice a booking (read), a training job for every 5th booking that held its GPUs (~120,000 at a million).

At --bookings 1000000: 1,000,000 bookings, ~1.24M allocations, 5M audit entries, 1M notices.

Each read runs in two worker processes, one per database, each with its own Django and its own
persistent connection; requests go through Django's test client (every middleware, no network), so
the time is the server's. For each read: 3 warm-up requests each, then `--rounds` requests each,
fresh and history alternating. Targets (issue 19): every read's p50 within 2x of fresh, the
calendar page under 300 ms and /metrics under 100 ms with history; booking POST and the tick
unchanged.
"""

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import time
from datetime import timedelta

import psycopg

from benchlib import REPO, in_process_env, machine, migrate, percentile, recreate_database

DATABASES = {"fresh": "gpu_bench_fresh", "history": "gpu_bench_history"}
NODES, GPUS_PER_NODE, TEAMS, PEOPLE = 16, 4, 8, 64
SLOT_HOURS = 2
YEARS_OF_SLOTS = 3 * 365 * 24 // SLOT_HOURS
LIVE_PER_SLOT, DOUBLE_PER_SLOT = 46, 18  # 18 x 2 + 28 x 1 = 64 GPUs
AUDIT_PER_BOOKING = 5
PRESENT_DAYS = 32  # the present reaches back this far; history ends a day before it


# ---- the worker: one Django per database ----------------------------------------------------------

def worker(name, db, conn):
    """Serve the parent's commands over `conn` against database `db`."""
    os.environ.update(in_process_env(db, VAR_DIR=str(REPO / "var" / "bench"), LOG_LEVEL="ERROR",
                                     METRICS_ALLOWED_IPS="127.0.0.1/32"))
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    logging.disable(logging.WARNING)  # the 409s' "Conflict" lines
    world = None
    while True:
        command, arg = conn.recv()
        if command == "inventory":
            conn.send(inventory())
        elif command == "present":
            world = present()
            conn.send(world["summary"])
        elif command == "load":
            world = load()
            conn.send(world["summary"])
        elif command == "read":
            conn.send(world["reads"][arg]())
        elif command == "stop":
            conn.send(None)
            return


def inventory():
    """Nodes, GPUs, teams with quotas, people: the same in both databases (same ids)."""
    from django.contrib.auth import get_user_model

    from reservations.models import Membership, Team, TeamQuota
    from reservations.services import Device, node_register

    for n in range(NODES):
        node_register(hostname=f"node{n:02}",
                      devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"n{n}-{i}") for i in range(GPUS_PER_NODE)])
    User = get_user_model()
    teams = [Team.objects.create(name=f"Team {t}", slug=f"team{t}", colour=f"#{30 * t:02x}79a7") for t in range(TEAMS)]
    for t, team in enumerate(teams):
        TeamQuota.objects.create(team=team, gpu_hours_per_week=2000 + 200 * t, max_gpus=32, borrow_gpu_hours_per_week=500)
    people = [User.objects.create_user(f"user{u}", email=f"user{u}@example.org") for u in range(PEOPLE)]
    Membership.objects.bulk_create([Membership(team=teams[u % TEAMS], user=p) for u, p in enumerate(people)])
    User.objects.create_superuser("admin", "admin@example.org", "bench")
    return {"users": [p.pk for p in people], "teams": [t.pk for t in teams]}


def present():
    """The present, the same in both databases: on every GPU a booking every 28 hours from PRESENT_DAYS
    ago to four days ahead (past ones completed, the current ones active with a running job), notices
    and the audit entries of each; then ANALYZE. Every window a read shows (a week, the usage report's
    30 days) holds the same bookings in both databases: history only adds what lies before it."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from reservations import policy
    from reservations.models import GPU, Allocation, AuditEntry, Notice, Reservation, Team
    from trainer.models import TrainingJob

    now = timezone.now()
    slot = policy.slot_length()
    anchor = policy.floor_to_slot(now)
    gpus = list(GPU.objects.order_by("node__hostname", "index"))
    people = list(get_user_model().objects.filter(username__startswith="user").order_by("pk"))
    teams = list(Team.objects.order_by("pk"))
    rows = []
    for g, gpu in enumerate(gpus):
        for k in range(-PRESENT_DAYS * 24 // 28, 4):
            start = anchor + k * 14 * slot + (g % 7) * slot
            if start <= now < start + 2 * slot:
                status = Reservation.Status.ACTIVE
            elif start + 2 * slot <= now:
                status = Reservation.Status.COMPLETED
            else:
                status = Reservation.Status.CONFIRMED
            rows.append((gpu, start, status))
    bookings = Reservation.objects.bulk_create([
        Reservation(user=people[i * 37 % PEOPLE], team=teams[i * 37 % PEOPLE % TEAMS], title=f"now {i}", start=start,
                    end=start + 2 * slot, gpu_count=1, status=status, preemptible=i % 4 == 0, created=start - timedelta(days=1))
        for i, (gpu, start, status) in enumerate(rows)
    ])
    Allocation.objects.bulk_create([Allocation(reservation=r, gpu=gpu, start=r.start, end=r.end)
                                    for r, (gpu, _, _) in zip(bookings, rows)])
    TrainingJob.objects.bulk_create([
        TrainingJob(reservation=r, spec={"model": "yolov8n.yaml", "epochs": 10}, epochs=10,
                    status=TrainingJob.Status.RUNNING if r.status == Reservation.Status.ACTIVE else TrainingJob.Status.COMPLETED,
                    started_at=r.start, ended_at=None if r.status == Reservation.Status.ACTIVE else r.end,
                    checkpoint=f"/runs/{i}/weights/epoch9.pt" if i % 3 == 0 else "")
        for i, r in enumerate(bookings) if r.status != Reservation.Status.CONFIRMED and i % 2 == 0
    ])
    AuditEntry.objects.bulk_create([
        AuditEntry(created=r.created, actor=r.user, action=AuditEntry.Action.CREATE, reservation=r,
                   reason="booked from the calendar", after={"gpus": [r.gpu_count], "start": r.start})
        for r in bookings
    ])
    Notice.objects.bulk_create([
        Notice(user=r.user, kind=Notice.Kind.SLOT_ENDING, reservation=r, message=f"Booking #{r.pk} ends soon.",
               created=r.start)
        for r in bookings if r.status == Reservation.Status.COMPLETED
    ])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return load()


def load():
    """The reads, as closures over this database's objects (its user0, its admin, its bookings)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Max
    from django.test import Client
    from django.utils import timezone

    from reservations import policy
    from reservations.models import GPU, Reservation
    from reservations.tasks import tick

    User = get_user_model()
    user = User.objects.get(username="user0")
    person, staff, scraper = Client(), Client(), Client(REMOTE_ADDR="127.0.0.1")
    person.force_login(user)
    staff.force_login(User.objects.get(username="admin"))
    now = timezone.now()
    slot = policy.slot_length()
    week = policy.floor_to_slot(now).replace(hour=0)
    mine = Reservation.objects.filter(user=user, start__lte=now).order_by("-start").first()
    busy = Reservation.objects.filter(status=Reservation.Status.CONFIRMED, start__gt=now).order_by("start").first()
    busy_gpu = busy.allocations.get().gpu_id
    gpus = list(GPU.objects.order_by("pk").values_list("pk", flat=True))
    day = (now - timedelta(days=1)).date().isoformat()
    next_booking = iter(range(10**6))
    # Booking POSTs go two weeks ahead, after what an earlier run (--reuse) booked there.
    far = max(policy.floor_to_slot(now) + timedelta(days=14),
              Reservation.objects.filter(start__gte=now + timedelta(days=7)).aggregate(last=Max("end"))["last"] or now)

    def book():
        k = next(next_booking)
        start = far + (k // len(gpus)) * slot
        return person.post("/api/v1/reservations/", {"gpus": [gpus[k % len(gpus)]], "start": start.isoformat(), "slots": 1},
                           content_type="application/json")

    def conflict():
        return person.post("/api/v1/reservations/", {"gpus": [busy_gpu], "start": busy.start.isoformat(), "slots": 1},
                           content_type="application/json")

    def streamed(response):
        if response.streaming:
            response.content_length = sum(len(part) for part in response.streaming_content)
        return response

    window = {"start": week.isoformat(), "end": (week + timedelta(days=7)).isoformat()}
    reads = {
        "calendar page /": lambda: person.get("/"),
        "calendar feed, one week": lambda: person.get("/calendar/events/", window),
        "/metrics": lambda: scraper.get("/metrics"),
        "admin audit list": lambda: staff.get("/admin/reservations/auditentry/"),
        "audit CSV export, one day": lambda: streamed(staff.get("/admin/reservations/auditentry/export.csv",
                                                                {"created_from": day, "created_to": day})),
        "admin bookings list": lambda: staff.get("/admin/reservations/reservation/"),
        "admin notices list": lambda: staff.get("/admin/reservations/notice/"),
        "usage report API, 7 days": lambda: staff.get("/api/v1/reports/usage/", {
            "start": (now - timedelta(days=7)).isoformat(), "end": now.isoformat()}),
        "usage report page": lambda: staff.get("/reports/usage/"),
        "/api/v1/reservations/?user=": lambda: person.get("/api/v1/reservations/", {"user": "user0"}),
        "/api/v1/notices/": lambda: person.get("/api/v1/notices/"),
        "/api/v1/audit/": lambda: staff.get("/api/v1/audit/"),
        "/bookings/": lambda: person.get("/bookings/"),
        "/notices/": lambda: person.get("/notices/"),
        "availability, gpu_count=4": lambda: person.get("/api/v1/availability/", {"gpu_count": 4}),
        "a 409 with suggestions": conflict,
        "a booking's page": lambda: person.get(f"/bookings/{mine.pk}/"),
        "booking POST": book,
        "beat's tick": tick,
    }
    expected = {"a 409 with suggestions": 409, "booking POST": 201}

    def timed(name, call):
        def run():
            started = time.perf_counter()
            response = call()
            ms = (time.perf_counter() - started) * 1000
            if response is None or isinstance(response, dict):  # the tick returns its counts
                return ms, 0, 0
            status = response.status_code
            if status != expected.get(name, 200):
                raise SystemExit(f"{name}: {status} {getattr(response, 'content', b'')[:300]!r}")
            size = getattr(response, "content_length", None) or (0 if response.streaming else len(response.content))
            return ms, status, size
        return run

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM reservations_reservation")
        bookings = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM reservations_auditentry")
        entries = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM reservations_notice")
        notices = cursor.fetchone()[0]
    return {"reads": {name: timed(name, call) for name, call in reads.items()},
            "summary": {"bookings": bookings, "audit entries": entries, "notices": notices}}


# ---- the history, in SQL --------------------------------------------------------------------------

def build_history(db, total, ids):
    """`total` bookings before this week, back to back, oldest first (ids 1..total)."""
    slots = min(YEARS_OF_SLOTS, -(-total // LIVE_PER_SLOT))
    per_slot = -(-total // slots)
    users, teams = ids["users"], ids["teams"]
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db}", autocommit=True) as conn:
        gpus = [row[0] for row in conn.execute("SELECT id FROM reservations_gpu ORDER BY id")]
        nodes = [row[0] for row in conn.execute("SELECT node_id FROM reservations_gpu ORDER BY id")]
        assert len(gpus) == LIVE_PER_SLOT + DOUBLE_PER_SLOT
        params = {"n": total, "p": per_slot, "slots": slots, "users": users, "teams": teams, "gpus": gpus,
                  "nodes": nodes, "h": SLOT_HOURS, "live": LIVE_PER_SLOT, "double": DOUBLE_PER_SLOT}
        conn.execute("SET maintenance_work_mem = '512MB'")
        # The first booking's slot: `slots` two-hour slots before the day before the present.
        t0 = conn.execute(
            "SELECT date_trunc('day', now()) - %(days)s * interval '1 day' - %(slots)s * interval '2 hours'",
            {**params, "days": PRESENT_DAYS + 1},
        ).fetchone()[0]
        params["t0"] = t0
        steps = [
            ("bookings", """
                INSERT INTO reservations_reservation
                    (id, title, start, "end", priority, preemptible, status, gpu_count, allow_multi_node, created,
                     updated, user_id, team_id, auto_rebook, borrowed, cancelled_at)
                SELECT b + 1, 'run ' || b, s, s + interval '2 hours',
                       CASE WHEN mod(b, 10) = 0 THEN 'high' WHEN mod(b, 3) = 0 THEN 'low' ELSE 'normal' END,
                       mod(b, 5) = 0,
                       CASE WHEN j >= %(live)s THEN 'cancelled' ELSE 'completed' END,
                       CASE WHEN j < %(double)s THEN 2 ELSE 1 END, false, s - interval '1 day', s,
                       (%(users)s::bigint[])[1 + mod(b, cardinality(%(users)s::bigint[]))],
                       (%(teams)s::bigint[])[1 + mod(mod(b, cardinality(%(users)s::bigint[])), cardinality(%(teams)s::bigint[]))],
                       false, j < %(live)s AND mod(b, 50) = 0,
                       CASE WHEN j >= %(live)s THEN s - interval '3 hours' END
                FROM generate_series(0, %(n)s - 1) b,
                     LATERAL (SELECT mod(b, %(p)s) AS j, %(t0)s + (b / %(p)s) * interval '2 hours' AS s) x
            """),
            ("allocations", """
                INSERT INTO reservations_allocation (start, "end", live, gpu_id, reservation_id)
                SELECT s, s + interval '2 hours', j < %(live)s, (%(gpus)s::bigint[])[1 + g], b + 1
                FROM generate_series(0, %(n)s - 1) b,
                     LATERAL (SELECT mod(b, %(p)s) AS j, %(t0)s + (b / %(p)s) * interval '2 hours' AS s) x,
                     LATERAL (SELECT CASE WHEN j < %(double)s THEN 2 * j WHEN j < %(live)s THEN j + %(double)s
                                          ELSE mod(j - %(live)s, 64) END AS g
                              UNION ALL SELECT 2 * j + 1 WHERE j < %(double)s) y
            """),
            ("jobs", """
                INSERT INTO trainer_trainingjob
                    (spec, status, reason, epoch, epochs, metrics, checkpoint, checkpoint_sha256, devices,
                     log_path, run_dir, created, updated, started_at, ended_at, node_id, reservation_id, spawned_at,
                     checkpoint_epoch)
                SELECT '{"model": "yolov8n.yaml", "epochs": 10}', CASE WHEN mod(b, 7) = 0 THEN 'failed' ELSE 'completed' END,
                       '', 10, 10, '{"mAP50": 0.5}', CASE WHEN mod(b, 4) = 0 THEN '/runs/' || b || '/weights/epoch9.pt' ELSE '' END,
                       '', '0', '', '', s, s + interval '2 hours', s + interval '2 minutes', s + interval '115 minutes',
                       (%(nodes)s::bigint[])[1 + (CASE WHEN j < %(double)s THEN 2 * j ELSE j + %(double)s END)],
                       b + 1, s + interval '1 minute', CASE WHEN mod(b, 4) = 0 THEN 9 END
                FROM generate_series(0, %(n)s - 1, 5) b,
                     LATERAL (SELECT mod(b, %(p)s) AS j, %(t0)s + (b / %(p)s) * interval '2 hours' AS s) x
                WHERE j < %(live)s
            """),
            ("audit entries", """
                INSERT INTO reservations_auditentry (created, action, reason, before, after, actor_id, reservation_id, target)
                SELECT s - interval '1 day' + k * interval '31 minutes',
                       CASE k WHEN 0 THEN 'create' WHEN 1 THEN 'activate' WHEN 2 THEN 'notice'
                              WHEN 3 THEN CASE WHEN mod(b, 40) = 0 THEN 'preempt' ELSE 'update' END
                              ELSE CASE WHEN j >= %(live)s THEN 'cancel' ELSE 'complete' END END,
                       CASE k WHEN 0 THEN 'booked through the API for run ' || b ELSE 'the scheduler''s clock' END,
                       CASE WHEN k = 3 THEN jsonb_build_object('title', 'run ' || b) END,
                       CASE WHEN k = 0 THEN jsonb_build_object('start', s, 'gpu_count', 1) WHEN k = 3 THEN jsonb_build_object('title', 'run ' || b || ' (2)') END,
                       CASE WHEN k IN (0, 3) THEN (%(users)s::bigint[])[1 + mod(b, cardinality(%(users)s::bigint[]))] END,
                       b + 1, ''
                FROM generate_series(0, %(n)s - 1) b,
                     LATERAL (SELECT mod(b, %(p)s) AS j, %(t0)s + (b / %(p)s) * interval '2 hours' AS s) x,
                     generate_series(0, 4) k
            """),
            ("notices", """
                INSERT INTO reservations_notice
                    (kind, message, created, read_at, user_id, reservation_id, data, emailed_at, webhook_attempts,
                     webhook_error, email_error)
                SELECT CASE WHEN j >= %(live)s THEN 'cancelled' ELSE 'slot_ending' END,
                       'Booking #' || (b + 1) || ' (run ' || b || ') ends in 15 minutes.', s + interval '105 minutes',
                       s + interval '3 hours', (%(users)s::bigint[])[1 + mod(b, cardinality(%(users)s::bigint[]))], b + 1,
                       '{}', CASE WHEN mod(b, 3) = 0 THEN s + interval '106 minutes' END, 0, '', ''
                FROM generate_series(0, %(n)s - 1) b,
                     LATERAL (SELECT mod(b, %(p)s) AS j, %(t0)s + (b / %(p)s) * interval '2 hours' AS s) x
            """),
        ]
        timings = []
        for what, sql in steps:
            started = time.perf_counter()
            conn.execute(sql, params)
            timings.append((what, time.perf_counter() - started))
            print(f"  history: {what} in {timings[-1][1]:.0f} s", flush=True)
        conn.execute("SELECT setval(pg_get_serial_sequence('reservations_reservation', 'id'), %(n)s)", params)
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  history: VACUUM ANALYZE in {time.perf_counter() - started:.0f} s", flush=True)
        return t0, slots, per_slot


# ---- the run ---------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=1_000_000, help="bookings of history (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=15, help="timed requests per read and database")
    parser.add_argument("--reads", nargs="*", help="only the reads whose names contain one of these")
    parser.add_argument("--reuse", action="store_true", help="measure the databases the last run left")
    parser.add_argument("--prefix", default="gpu_bench", help="of the databases' names (default gpu_bench)")
    args = parser.parse_args()
    for name in DATABASES:
        DATABASES[name] = f"{args.prefix}_{name}"

    env = {**os.environ, **in_process_env("x"), "PATH": "/usr/bin:/bin"}
    if not args.reuse:
        for db in DATABASES.values():
            version = recreate_database(db)
            migrate(env={**env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}"})
    context = multiprocessing.get_context("spawn")
    pipes, procs = {}, []
    for name, db in DATABASES.items():
        ours, theirs = context.Pipe()
        proc = context.Process(target=worker, args=(name, db, theirs), daemon=True)
        proc.start()
        pipes[name], procs = ours, procs + [proc]

    def ask(name, command, arg=None):
        pipes[name].send((command, arg))
        return pipes[name].recv()

    started = time.perf_counter()
    if args.reuse:
        summaries = {name: ask(name, "load") for name in DATABASES}
    else:
        ids = {name: ask(name, "inventory") for name in DATABASES}
        assert ids["fresh"] == ids["history"], "both databases must hold the same people and teams"
        print(f"building {args.bookings:,} bookings of history in {DATABASES['history']} ...", flush=True)
        build_history(DATABASES["history"], args.bookings, ids["history"])
        summaries = {name: ask(name, "present") for name in DATABASES}
    print(f"set up in {time.perf_counter() - started:.0f} s", flush=True)

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        sizes = {name: conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", [db]).fetchone()[0]
                 for name, db in DATABASES.items()}
    names = list(READ_ORDER)
    if args.reads:
        names = [n for n in names if any(part in n for part in args.reads)]
    results = {}
    for name in names:
        timings = {side: [] for side in DATABASES}
        sizes_seen = {}
        for side in DATABASES:
            for _ in range(3):
                ask(side, "read", name)
        for _ in range(args.rounds):
            for side in DATABASES:
                ms, status, size = ask(side, "read", name)
                timings[side].append(ms)
                sizes_seen[side] = size
        results[name] = (timings, sizes_seen)
        fresh, history = statistics.median(timings["fresh"]), statistics.median(timings["history"])
        print(f"  {name:32} fresh {fresh:8.1f} ms  history {history:8.1f} ms  x{history / fresh:5.2f}", flush=True)
    for side in DATABASES:
        ask(side, "stop")
    report(results, summaries, sizes, version, args)


READ_ORDER = [
    "calendar page /", "calendar feed, one week", "/metrics", "admin audit list", "audit CSV export, one day",
    "admin bookings list", "admin notices list", "usage report API, 7 days", "usage report page",
    "/api/v1/reservations/?user=", "/api/v1/notices/", "/api/v1/audit/", "/bookings/", "/notices/",
    "availability, gpu_count=4", "a 409 with suggestions", "a booking's page", "booking POST", "beat's tick",
]


def report(results, summaries, sizes, version, args):
    print()
    print(f"machine  : {machine()}; PostgreSQL {version}")
    for side in DATABASES:
        print(f"{side:9}: " + ", ".join(f"{k} {v:,}" for k, v in summaries[side].items()) + f"; {sizes[side]}")
    print(f"requests : Django test client in process, 3 warm-up then {args.rounds} per database, alternating")
    print(f"{'what':34} {'fresh p50':>10} {'history p50':>12} {'p95':>8} {'x':>6} {'KB':>8}  within 2x")
    worst = 0.0
    for name, (timings, sizes_seen) in results.items():
        fresh, history = statistics.median(timings["fresh"]), statistics.median(timings["history"])
        ratio = history / fresh
        worst = max(worst, ratio)
        print(f"{name:34} {fresh:8.1f} ms {history:9.1f} ms {percentile(timings['history'], 95):6.1f} "
              f"{ratio:6.2f} {sizes_seen['history'] / 1024:8.1f}  {'yes' if ratio <= 2 else 'NO'}")
    print(f"worst ratio: {worst:.2f} (target <= 2)")
    for name, limit in (("calendar page /", 300), ("/metrics", 100)):
        if name in results:
            p50 = statistics.median(results[name][0]["history"])
            print(f"target   : {name} with history under {limit} ms: {'met' if p50 < limit else 'NOT met'} ({p50:.1f} ms)")


if __name__ == "__main__":
    main()
