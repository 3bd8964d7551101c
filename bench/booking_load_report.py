"""booking_load's numbers and report."""

import os
import platform
from collections import Counter

import gunicorn
import psycopg

from benchlib import cpu_model, percentile
from booking_load_setup import CONFIG_NOTE, DEFAULT_SERVER

# Targets, as stated for 16 clients.
TARGET_RATIO = 0.5
TARGET_BOOKING_P99_MS = 100.0
TARGET_CLIENTS = 16
# Warn when processes outside the benchmark used more than this share of the machine in a phase.
OTHER_CPU_WARN = 0.10


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
