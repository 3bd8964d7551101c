"""booking_load's load generator. This part runs in spawned client processes, so it must not import
Django: the processes only need requests, and keeping them light leaves more of the two cores to the
server."""

import multiprocessing as mp
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import requests

ME_URL = "/api/v1/me/"
BOOK_URL = "/api/v1/reservations/"
REQUEST_TIMEOUT_S = 30


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


def run_clients(phase, base_url, specs, *, seconds, procs, cpu_snapshot):
    """Run one phase: spread the clients over `procs` processes, start them together, gather results.
    `cpu_snapshot()` is read when the clients start and when they are done."""
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
