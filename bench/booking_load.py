#!/usr/bin/env python
"""Load benchmark for the booking API: how fast is a booking next to a trivial request, and is it safe?

What it measures, against a real gunicorn + PostgreSQL stack on this machine:

  A. Baseline: N closed-loop clients hammer GET /api/v1/me/ (token auth, no writes).
  B. Bookings: N closed-loop clients POST /api/v1/reservations/ for one GPU and one slot each, on GPUs
     and slots no other request uses, so every response must be 201.
  C. Race: 64 clients POST the same GPU and slot at the same instant (behind a barrier), for
     several rounds with a fresh slot each; exactly one 201 and 63 409s per round are expected.

Afterwards it counts double bookings straight from the database (overlapping live allocations on one
GPU; must be 0), and prints the machine, the server config, req/s and p50/p99 latency per phase, the
ratio booking req/s / baseline req/s and whether the targets are met (ratio >= 0.5 and booking p99
<= 100 ms at 16 clients).

How to run (from the repository root; PostgreSQL at 127.0.0.1:5432, user postgres, trust auth):

    .venv/bin/python bench/booking_load.py [--clients 16] [--seconds 15]

It drops and recreates the database `gpu_bench` (--db) each run and leaves it behind for inspection.
Everything runs on this one machine, so the load generator competes with gunicorn and PostgreSQL for
the same cores; the report shows the CPU seconds each side used so that can be judged. Exit status:
0 when the correctness checks pass (performance targets are reported, not enforced), 1 when they fail.
"""

import argparse
import math
import multiprocessing as mp
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import gunicorn
import psycopg
import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ME_URL = "/api/v1/me/"
BOOK_URL = "/api/v1/reservations/"
# Targets, as stated for 16 clients.
TARGET_RATIO = 0.5
TARGET_BOOKING_P99_MS = 100.0
TARGET_CLIENTS = 16
REQUEST_TIMEOUT_S = 30
# Warn when processes outside the benchmark used more than this share of the machine in a phase.
OTHER_CPU_WARN = 0.10
# The default server shape, and why (from a sweep on a 2-core box; see bench/README.md).
DEFAULT_SERVER = ("sync", 3, 1)
CONFIG_NOTE = ("default chosen from a sweep on 2 cores: booking req/s was within noise for sync x2..x4 and "
               "gthread 2x4..4x4, and sync x3 gave the lowest booking p99; gthread's keep-alive helps only "
               "the trivial phase while its GIL-sharing threads widen the tail")


# --------------------------------------------------------------------------------------------------
# Load generator. This part runs in spawned client processes, so it must not import Django: the
# processes only need requests, and keeping them light leaves more of the two cores to the server.
# --------------------------------------------------------------------------------------------------

def iso_z(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def booking_plan(gpus, first_slot_ts, slot_s, n_slots):
    """Every (gpu, start) this client may book: the next slot on each of its GPUs, then the next slot."""
    for k in range(n_slots):
        for gpu in gpus:
            yield gpu, iso_z(first_slot_ts + k * slot_s)


def client_thread(phase, base_url, spec, seconds, start_barrier, round_barrier, out, index, marks):
    """One closed-loop client: send a request, wait for the answer, send the next."""
    rec = {"lat_ms": [], "status": Counter(), "errors": Counter(), "sample": None,
           "t0": None, "t1": None, "exhausted": False, "rounds": []}
    out[index] = rec
    session = requests.Session()  # one connection per client, kept alive where the server allows
    session.headers["Authorization"] = f"Token {spec['token']}"
    try:
        # Open the connection (and check the token) before the clock starts.
        session.get(base_url + ME_URL, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as exc:
        rec["errors"][f"warm-up: {type(exc).__name__}"] += 1
    start_barrier.wait(timeout=300)
    rec["t0"] = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
    marks.setdefault("cpu_at_start", time.process_time())  # the first thread past the barrier sets it

    def send(method, path, expected, **kwargs):
        t = time.perf_counter()
        try:
            r = session.request(method, base_url + path, timeout=REQUEST_TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            rec["errors"][type(exc).__name__] += 1
            time.sleep(0.05)  # a dead server fails fast: do not spin on it
            return None
        ms = (time.perf_counter() - t) * 1000
        rec["lat_ms"].append(ms)
        rec["status"][r.status_code] += 1
        if r.status_code not in expected and rec["sample"] is None:
            rec["sample"] = f"{r.status_code} {r.text[:300]}"
        return r.status_code, ms

    try:
        if phase == "me":
            deadline = rec["t0"] + seconds
            while time.perf_counter() < deadline:
                send("GET", ME_URL, (200,))
        elif phase == "book":
            deadline = rec["t0"] + seconds
            plan = booking_plan(spec["gpus"], spec["first_slot_ts"], spec["slot_s"], spec["n_slots"])
            while time.perf_counter() < deadline:
                item = next(plan, None)
                if item is None:  # ran out of distinct (gpu, slot) pairs: stop rather than conflict
                    rec["exhausted"] = True
                    break
                gpu, start = item
                send("POST", BOOK_URL, (201,), json={"gpus": [gpu], "start": start, "slots": 1})
        elif phase == "race":
            for round_no, start in enumerate(spec["starts"]):
                round_barrier.wait(timeout=300)  # everyone fires at once
                result = send("POST", BOOK_URL, (201, 409),
                              json={"gpus": [spec["gpu"]], "start": start, "slots": 1})
                code, ms = result if result else ("error", None)
                rec["rounds"].append((round_no, code, ms))
    except Exception as exc:  # e.g. a broken barrier: report it as an error instead of losing the client
        rec["errors"][f"client stopped: {type(exc).__name__}"] += 1
        round_barrier.abort()  # release the other race clients rather than leave them waiting
    finally:
        rec["t1"] = time.perf_counter()
        session.close()


def client_process(phase, base_url, specs, seconds, start_barrier, round_barrier, results):
    """Runs a share of the clients as threads; reports their records and this process's CPU time
    from the start signal on (set-up and warm-up excluded, like on the server side)."""
    out = [None] * len(specs)
    marks = {}
    threads = [
        threading.Thread(target=client_thread,
                         args=(phase, base_url, spec, seconds, start_barrier, round_barrier, out, i, marks))
        for i, spec in enumerate(specs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu_s = time.process_time() - marks.get("cpu_at_start", 0.0)
    results.put({"threads": out, "cpu_s": cpu_s})


def run_clients(phase, base_url, specs, *, seconds, procs):
    """Run one phase: spread the clients over `procs` processes, start them together, gather results."""
    ctx = mp.get_context("spawn")  # fresh interpreters: no Django state or DB sockets inherited
    start_barrier = ctx.Barrier(len(specs) + 1)  # +1: this process, so it knows when the clock starts
    round_barrier = ctx.Barrier(len(specs))
    results = ctx.Queue()
    shares = [specs[i::procs] for i in range(procs) if specs[i::procs]]
    workers = [
        ctx.Process(target=client_process,
                    args=(phase, base_url, share, seconds, start_barrier, round_barrier, results))
        for share in shares
    ]
    for w in workers:
        w.start()
    try:
        start_barrier.wait(timeout=300)
        before, wall0 = cpu_snapshot(), time.perf_counter()
        # Drain the queue before join(): a child blocks on exit until its result has been read.
        gathered = [results.get(timeout=seconds + 300) for _ in workers]
        after, wall = cpu_snapshot(), time.perf_counter() - wall0
    except BaseException:  # Ctrl-C or a stuck phase: stop our client processes now, not after the phase
        for w in workers:
            w.terminate()
        raise
    finally:
        for w in workers:
            w.join(timeout=30)
    records = [rec for g in gathered for rec in g["threads"]]
    cpu = {"clients": sum(g["cpu_s"] for g in gathered), "wall": wall}
    for key in ("gunicorn", "postgres", "machine"):
        cpu[key] = None if after[key] is None else after[key] - before[key]
    return records, cpu


# --------------------------------------------------------------------------------------------------
# CPU accounting from /proc, so the report can show who used the machine during each phase.
# --------------------------------------------------------------------------------------------------

GUNICORN_PID = None  # set once the server runs
BENCH_DB = None  # set in main(): only PostgreSQL backends serving this database are counted
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot():
    """CPU seconds used so far: by gunicorn (master + workers), by the PostgreSQL backends of the
    benchmark database, and by the whole machine (busy time from /proc/stat).

    The machine total lets the report show CPU used by other processes during a phase, which would
    otherwise silently lower the numbers (this box may be shared).
    """
    totals = {"gunicorn": 0.0, "postgres": 0.0}
    seen_pg = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
        pid, ppid = int(entry), int(fields[1])
        ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        if GUNICORN_PID is not None and GUNICORN_PID in (pid, ppid):
            totals["gunicorn"] += ticks
        elif cmdline.startswith("postgres:") and f" {BENCH_DB} " in cmdline:
            # A backend's title is "postgres: <cluster>: <user> <database> <client> <state>".
            totals["postgres"] += ticks
            seen_pg = True
    if not seen_pg:
        totals["postgres"] = None  # server not visible from here (another container/host)
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    totals["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / CLK_TCK
    return totals


# --------------------------------------------------------------------------------------------------
# Set-up: database, inventory, server.
# --------------------------------------------------------------------------------------------------

def recreate_database(name):
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        # FORCE: a previous run's gunicorn left behind must not keep the database alive.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        return conn.execute("SHOW server_version").fetchone()[0]


def app_env(args, db_url):
    """The environment both manage.py and gunicorn run with; the settings module reads only this."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="scheduler.settings",
        DATABASE_URL=db_url,
        DEBUG="0",
        SECRET_KEY="bench-not-secret-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        # A longer horizon than the default 28 days leaves room for many distinct slots per GPU.
        BOOKING_HORIZON_DAYS=str(args.horizon_days),
    )
    return env


def seed(args, env, n_users):
    """Create nodes/GPUs, one team and `n_users` users with tokens, through the ORM in this process.

    Returns (gpu ids in id order, user tokens, SLOT_HOURS, BOOKING_HORIZON_DAYS as Django sees them).
    """
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections, transaction
    from rest_framework.authtoken.models import Token

    from reservations import services
    from reservations.models import GPU, Membership, Team
    from trainer.hardware import Device

    User = get_user_model()
    with transaction.atomic():
        for n in range(args.nodes):
            services.node_register(
                hostname=f"bench-node{n:02d}",
                devices=[Device(index=i, model="NVIDIA H100 80GB HBM3", memory_mb=81559,
                                uuid=f"GPU-bench-{n:02d}-{i}") for i in range(args.gpus_per_node)],
            )
        team = Team.objects.create(name="Bench", slug="bench")
        users = []
        for i in range(n_users):
            user = User(username=f"bench{i:03d}")
            user.set_unusable_password()  # create_user would spend ~0.3 s per user hashing a password
            users.append(user)
        users = User.objects.bulk_create(users)
        Membership.objects.bulk_create(Membership(team=team, user=u) for u in users)
        tokens = Token.objects.bulk_create(Token(user=u, key=Token.generate_key()) for u in users)
    gpu_ids = list(GPU.objects.order_by("id").values_list("id", flat=True))
    result = (gpu_ids, [t.key for t in tokens], settings.SLOT_HOURS, settings.BOOKING_HORIZON_DAYS)
    connections.close_all()  # gunicorn and the clients get their own connections
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(args, env, port, log_file):
    global GUNICORN_PID
    cmd = [
        str(VENV_BIN / "gunicorn"), "scheduler.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", args.worker_class,
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--backlog", "2048",  # the race phase opens 64 connections at once
        "--log-level", "warning",
    ]
    # Its own session, so that it can be stopped as a group (master and workers) if it will not exit.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    GUNICORN_PID = proc.pid
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with status {proc.returncode} while starting; "
                                   f"see {log_file.name}")
            try:
                # Any HTTP answer (401 here: no token) means a worker has loaded Django and serves.
                requests.get(base_url + ME_URL, timeout=2)
                return proc, base_url
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within 60 s; see {log_file.name}")
    except BaseException:
        stop_gunicorn(proc)  # the caller never gets the handle, so stop it here
        raise


def stop_gunicorn(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created in start_gunicorn
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------------
# Numbers and report.
# --------------------------------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(records, expected):
    lat = sorted(ms for r in records for ms in r["lat_ms"])
    status = sum((r["status"] for r in records), Counter())
    errors = sum((r["errors"] for r in records), Counter())
    t0 = min(r["t0"] for r in records)
    t1 = max(r["t1"] for r in records)
    elapsed = t1 - t0
    return {
        "n": len(lat),
        "elapsed": elapsed,
        "rps": len(lat) / elapsed if elapsed > 0 else float("nan"),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": lat[-1] if lat else float("nan"),
        "status": status,
        "unexpected": sum(c for s, c in status.items() if s not in expected) + sum(errors.values()),
        "errors": errors,
        "sample": next((r["sample"] for r in records if r["sample"]), None),
        "exhausted": sum(r["exhausted"] for r in records),
    }


def fmt_cpu(cpu):
    """Who used the CPU during a phase. "other" is everything else on the machine (other PostgreSQL
    databases, unrelated jobs): if it is large, the phase's numbers are not trustworthy."""
    known = cpu["clients"] + cpu["gunicorn"] + (cpu["postgres"] or 0.0)
    other = max(0.0, cpu["machine"] - known)
    pg = "n/a (not visible)" if cpu["postgres"] is None else f"{cpu['postgres']:.1f}"
    available = (os.cpu_count() or 1) * cpu["wall"]
    return (f"CPU s: clients {cpu['clients']:.1f}, gunicorn {cpu['gunicorn']:.1f}, postgres {pg}, "
            f"other {other:.1f}; machine busy {cpu['machine']:.1f} of {available:.1f} available")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def db_checks(db_url_libpq):
    """Double bookings and row counts, straight from PostgreSQL (not through the app)."""
    with psycopg.connect(db_url_libpq) as conn:
        double = conn.execute(
            """
            SELECT count(*) FROM reservations_allocation a
            JOIN reservations_allocation b
              ON a.gpu_id = b.gpu_id AND a.id < b.id
             AND a.start < b."end" AND b.start < a."end"
            WHERE a.live AND b.live
            """
        ).fetchone()[0]
        live = conn.execute("SELECT count(*) FROM reservations_allocation WHERE live").fetchone()[0]
        reservations = conn.execute("SELECT count(*) FROM reservations_reservation").fetchone()[0]
    return double, live, reservations


def summarise_race(records, n_rounds, n_clients):
    rounds = [Counter() for _ in range(n_rounds)]
    slowest_ms = [0.0] * n_rounds
    for rec in records:
        for round_no, code, ms in rec["rounds"]:
            rounds[round_no][code] += 1
            slowest_ms[round_no] = max(slowest_ms[round_no], ms or 0.0)
    errors = sum((r["errors"] for r in records), Counter())
    return {
        "rounds": rounds,
        "slowest_ms": sorted(slowest_ms),
        "ok": [r[201] == 1 and r[409] == n_clients - 1 for r in rounds],
        # Statuses other than 201/409 ("error" when no HTTP answer came back).
        "other": sum(c for r in rounds for code, c in r.items() if code not in (201, 409)),
        "errors": errors,
        "sample": next((r["sample"] for r in records if r["sample"]), None),
    }


def print_report(args, info, a, a_cpu, b, b_cpu, c, c_cpu, db):
    """Print everything; return True when a correctness check failed."""
    double, live, n_reservations = db
    ratio = b["rps"] / a["rps"] if a["rps"] else float("nan")
    created_201 = b["status"][201] + sum(r[201] for r in c["rounds"])
    line = "-" * 100
    print()
    print("GPU booking API load benchmark")
    print(line)
    print(f"machine      : {os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}")
    print(f"software     : Python {platform.python_version()}, PostgreSQL {info['pg_version']}, "
          f"gunicorn {gunicorn.__version__}")
    workers = f"{args.workers} workers"
    if args.worker_class == "gthread":
        workers += f" x {args.threads} threads"
    print(f"server       : gunicorn --worker-class {args.worker_class}, {workers}; DEBUG=0, "
          f"DB_CONN_MAX_AGE={os.environ.get('DB_CONN_MAX_AGE', '60 (app default)')}")
    if (args.worker_class, args.workers, args.threads) == DEFAULT_SERVER:
        print(f"               ({CONFIG_NOTE})")
    keep_alive = "reconnects per request: sync workers close" if args.worker_class == "sync" else "keep-alive"
    print(f"load         : {args.clients} closed-loop clients over {args.client_procs} processes, "
          f"{args.seconds:g} s per phase, one requests.Session each ({keep_alive}), "
          "clients on the same machine")
    print(f"inventory    : {args.nodes} nodes x {args.gpus_per_node} GPUs, 1 team, {info['n_users']} users "
          f"with tokens; SLOT_HOURS={info['slot_hours']}, BOOKING_HORIZON_DAYS={info['horizon_days']}")
    print(line)
    print(f"{'phase':<34}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'bad':>6}")
    for name, s in (("A  GET  /api/v1/me/", a), ("B  POST /api/v1/reservations/", b)):
        print(f"{name:<34}{s['n']:>9}{s['rps']:>9.1f}{s['p50']:>9.1f}{s['p99']:>9.1f}{s['max']:>9.1f}"
              f"{s['unexpected']:>6}")
    for name, s, cpu in (("A", a, a_cpu), ("B", b, b_cpu)):
        errors = f", errors: {dict(s['errors'])}" if s["errors"] else ""
        print(f"  {name} statuses: {dict(s['status'])}{errors}")
        print(f"  {name} {fmt_cpu(cpu)}")
        if s["sample"]:
            print(f"  {name} first unexpected response: {s['sample']}")
    if b["exhausted"]:
        print(f"  B: {b['exhausted']} client(s) ran out of distinct slots before the end "
              "(raise --horizon-days)")
    print(f"ratio booking/trivial req/s : {ratio:.3f}")
    print(line)
    rounds = c["rounds"]
    print(f"C  race: {args.race_clients} clients x {len(rounds)} rounds, same GPU (id {info['race_gpu']}) "
          f"and slot per round")
    print(f"   {fmt_cpu(c_cpu)}")
    print("   201s per round : " + " ".join(str(r[201]) for r in rounds))
    print("   409s per round : " + " ".join(str(r[409]) for r in rounds))
    print(f"   slowest answer per round, ms: median {c['slowest_ms'][len(rounds) // 2]:.0f}, "
          f"max {c['slowest_ms'][-1]:.0f}")
    print(f"   rounds with exactly one 201 and {args.race_clients - 1} 409s: {sum(c['ok'])}/{len(rounds)}; "
          f"other statuses: {c['other']}" + (f"; errors: {dict(c['errors'])}" if c["errors"] else ""))
    if c["sample"]:
        print(f"   first unexpected response: {c['sample']}")
    print(line)
    print(f"database     : double bookings (overlapping live allocations on one GPU) = {double}")
    print(f"               live allocations = {live}, reservations = {n_reservations}, "
          f"201 responses seen = {created_201}")
    print(line)
    checks = [
        ("phase A: every request answered 200", a["unexpected"] == 0 and a["n"] > 0),
        ("phase B: every booking answered 201", b["unexpected"] == 0 and b["n"] > 0),
        ("phase C: one 201 and the rest 409 in every round",
         all(c["ok"]) and not c["other"] and not c["errors"]),
        ("no double bookings in the database", double == 0),
        ("database rows match the 201s", live == created_201 == n_reservations),
    ]
    targets = [
        (f"ratio booking/trivial >= {TARGET_RATIO} (got {ratio:.2f})", ratio >= TARGET_RATIO),
        (f"booking p99 <= {TARGET_BOOKING_P99_MS:g} ms (got {b['p99']:.1f})",
         b["p99"] <= TARGET_BOOKING_P99_MS),
    ]
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")
    note = ""
    if args.clients != TARGET_CLIENTS:
        note = f" (targets are set for {TARGET_CLIENTS} clients; this run used {args.clients})"
    for text, ok in targets:
        print(f"[{'MET ' if ok else 'MISS'}] target: {text}{note}")
    for name, cpu in (("A", a_cpu), ("B", b_cpu), ("C", c_cpu)):
        other = cpu["machine"] - cpu["clients"] - cpu["gunicorn"] - (cpu["postgres"] or 0.0)
        if other > OTHER_CPU_WARN * (os.cpu_count() or 1) * cpu["wall"]:
            print(f"WARNING: other processes used {other:.1f} CPU s during phase {name} "
                  f"({other / cpu['wall']:.2f} cores); its numbers understate this stack. "
                  "Rerun on a quiet machine.")
    return not all(ok for _, ok in checks)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="closed-loop clients in phases A and B")
    p.add_argument("--seconds", type=float, default=15, help="duration of phases A and B")
    p.add_argument("--client-procs", type=int, default=2,
                   help="processes the clients are spread over (threads within each)")
    p.add_argument("--race-clients", type=int, default=64, help="clients firing at once in phase C")
    p.add_argument("--race-rounds", type=int, default=20, help="phase C rounds, one fresh slot each")
    p.add_argument("--nodes", type=int, default=16, help="nodes to register")
    p.add_argument("--gpus-per-node", type=int, default=4, help="GPUs per node")
    p.add_argument("--horizon-days", type=int, default=365, help="BOOKING_HORIZON_DAYS for the server")
    p.add_argument("--worker-class", default=DEFAULT_SERVER[0], choices=["sync", "gthread"],
                   help="gunicorn worker class")
    p.add_argument("--workers", type=int, default=DEFAULT_SERVER[1], help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=DEFAULT_SERVER[2], help="threads per worker (gthread only)")
    p.add_argument("--db", default="gpu_bench", help="database to drop, recreate and leave behind")
    args = p.parse_args()
    if args.worker_class == "sync":
        args.threads = 1  # gunicorn switches a sync worker with --threads > 1 to gthread
    if args.nodes * args.gpus_per_node < 2:
        p.error("need at least 2 GPUs: one for the race, the rest for phase B")
    return args


def main():
    global BENCH_DB
    # A plain `kill` should also stop gunicorn: turn SIGTERM into SystemExit so `finally` blocks run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args()
    BENCH_DB = args.db
    wall0 = time.monotonic()
    db_url = f"postgres://postgres@127.0.0.1:5432/{args.db}"
    db_libpq = f"host=127.0.0.1 port=5432 user=postgres dbname={args.db}"
    env = app_env(args, db_url)

    print(f"setting up database {args.db} ...", flush=True)
    pg_version = recreate_database(args.db)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                   cwd=REPO, env=env, check=True)
    n_users = max(args.clients, args.race_clients)
    gpu_ids, tokens, slot_hours, horizon_days = seed(args, env, n_users)

    # Slots: start one whole slot after the next boundary, so a run that crosses a boundary never
    # asks for a start in the past; stop one slot short of the horizon for the same reason.
    slot_s = slot_hours * 3600
    now = time.time()
    first_slot_ts = (math.floor(now / slot_s) + 2) * slot_s
    n_slots = int((now + horizon_days * 86400 - slot_s - first_slot_ts) // slot_s)
    race_gpu, book_gpus = gpu_ids[-1], gpu_ids[:-1]  # the race gets a GPU phase B never touches
    if args.race_rounds > n_slots:
        raise SystemExit(f"--race-rounds {args.race_rounds} exceeds the {n_slots} slots in the horizon")

    me_specs = [{"token": tokens[i]} for i in range(args.clients)]
    book_specs = [
        {"token": tokens[i], "gpus": book_gpus[i::args.clients], "first_slot_ts": first_slot_ts,
         "slot_s": slot_s, "n_slots": n_slots}
        for i in range(args.clients)
    ]
    if any(not s["gpus"] for s in book_specs):
        raise SystemExit(f"{len(book_gpus)} GPUs for phase B cannot give each of "
                         f"{args.clients} clients its own")
    race_starts = [iso_z(first_slot_ts + k * slot_s) for k in range(args.race_rounds)]
    race_specs = [{"token": tokens[i], "gpu": race_gpu, "starts": race_starts}
                  for i in range(args.race_clients)]

    server = None
    # One log per database name, overwritten each run: gunicorn's stderr, read it when a phase fails.
    log_file = open(Path(tempfile.gettempdir()) / f"{args.db}-gunicorn.log", "w")
    try:
        server, base_url = start_gunicorn(args, env, free_port(), log_file)
        print(f"gunicorn up at {base_url}; running phases ...", flush=True)
        # Warm-up, not reported: every worker thread loads its lazy imports and opens its DB connection.
        run_clients("me", base_url, me_specs, seconds=2, procs=args.client_procs)
        phase = dict(seconds=args.seconds, procs=args.client_procs)
        a_rec, a_cpu = run_clients("me", base_url, me_specs, **phase)
        b_rec, b_cpu = run_clients("book", base_url, book_specs, **phase)
        c_rec, c_cpu = run_clients("race", base_url, race_specs, seconds=0, procs=args.client_procs)
    finally:
        stop_gunicorn(server)
        log_file.close()

    a = summarise(a_rec, (200,))
    b = summarise(b_rec, (201,))
    c = summarise_race(c_rec, len(race_starts), args.race_clients)
    failed = print_report(args, {
        "pg_version": pg_version, "n_users": n_users, "slot_hours": slot_hours,
        "horizon_days": horizon_days, "race_gpu": race_gpu,
    }, a, a_cpu, b, b_cpu, c, c_cpu, db_checks(db_libpq))
    print(f"total run time {time.monotonic() - wall0:.0f} s; gunicorn log: {log_file.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; gunicorn and the client processes were stopped", file=sys.stderr)
        sys.exit(130)
