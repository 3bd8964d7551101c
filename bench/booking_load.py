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

This file holds the options and the run; its parts sit next to it: booking_load_clients.py (the load
generator, run in client processes), booking_load_cpu.py (CPU accounting), booking_load_setup.py
(environment, inventory, gunicorn) and booking_load_report.py (numbers and report), with what every
benchmark shares in benchlib.py.
"""

import argparse
import math
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from benchlib import migrate, recreate_database
from booking_load_clients import iso_z, run_clients
from booking_load_cpu import cpu_snapshot
from booking_load_report import db_checks, print_report, summarise, summarise_race
from booking_load_setup import DEFAULT_SERVER, app_env, free_port, seed, start_gunicorn, stop_gunicorn


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
    # A plain `kill` should also stop gunicorn: turn SIGTERM into SystemExit so `finally` blocks run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args()
    wall0 = time.monotonic()
    db_url = f"postgres://postgres@127.0.0.1:5432/{args.db}"
    db_libpq = f"host=127.0.0.1 port=5432 user=postgres dbname={args.db}"
    env = app_env(args, db_url)

    print(f"setting up database {args.db} ...", flush=True)
    pg_version = recreate_database(args.db)
    migrate(env)
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
        snapshot = partial(cpu_snapshot, server.pid, args.db)
        # Warm-up, not reported: every worker thread loads its lazy imports and opens its DB connection.
        run_clients("me", base_url, me_specs, seconds=2, procs=args.client_procs, cpu_snapshot=snapshot)
        phase = dict(seconds=args.seconds, procs=args.client_procs, cpu_snapshot=snapshot)
        a_rec, a_cpu = run_clients("me", base_url, me_specs, **phase)
        b_rec, b_cpu = run_clients("book", base_url, book_specs, **phase)
        c_rec, c_cpu = run_clients("race", base_url, race_specs, **dict(phase, seconds=0))
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
