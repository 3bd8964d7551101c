"""Spreading requests over inference replicas: the front door against calling one replica, round-robin
in the client and NGINX least_conn, over the same replica processes, side by side in one run.

    .venv/bin/python bench/router.py [--quick] [--seconds 10] [--rounds 3] [--concurrency 1 16 64]
                                     [--weights 1 1 2] [--failover-seconds 10] [--db gpu_bench_router] [--work DIR]

Real replicas (`python -m serving.replica`, CPU devices, one pinned YOLOv8n made as bench/replicas.py
makes its weights; --work keeps them for the next run), one per weight, all signed with one token so a
signing client works behind any proxy. For each concurrency (closed loop: each client sends its next
request on the last answer; --seconds per path, in --rounds turns with the paths alternating so that
other work on the machine weighs on each alike, each turn after 0.5 s of warm-up) and each way of
reaching them:

- direct: the client calls the first replica itself (the overhead baseline; it gets no spreading);
- round-robin: the client sends request i to replica i mod n, whatever their weights;
- nginx: Debian's nginx (`bin/apt-ensure nginx`) run by the bench with a generated configuration
  (`-p <work>/nginx -c nginx.conf`, one worker process), `least_conn` over the replicas with their
  `weight=`, keep-alive connections to them; the client signs the path the replica sees;
- front door: `uvicorn routing.asgi:app` (one process) against the database --db, recreated and
  migrated each run, holding a team, a user with an API token, two nodes (kept heart-beating), one
  CPU "GPU" per replica with a GpuWeight of its weight, an active serving booking whose `resolved`
  names the model's version and SHA-256 (also registered as a ModelVersion), and a ready Replica row
  per process. Skipped, saying so, where routing/asgi.py is not there yet.

Each answer names the replica that produced it (the replica's JSON says `"replica"`; the front door
adds its own), so the table shows each replica's share of the requests against its share of weight.

Failover, at concurrency 16 through nginx and through the front door: once the path sends requests
to the busiest replica (the largest weight), it is killed with SIGKILL (its whole process group) 2 s
into a --failover-seconds run; the table gives the errors the clients saw and the time from the kill
to the last error. Nothing
marks the dead replica failed in the database (no node supervisor runs here): the router finds out
by itself, as NGINX does. The replica is then started again on its port, and the table gives the
time until a request is served by it again.

Everything runs on this machine: clients, proxies and replicas share its cores.
"""

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import requests

from benchlib import REPO, machine, percentile, setup_environment, wait_for
from replicas import TOKEN, Replica, machine_busy_seconds, make_weights, model_spec

sys.path.insert(0, str(REPO))
from serving.signing import ReplicaClient  # noqa: E402

MODEL = "bench"
PREDICT = f"/v1/models/{MODEL}/predict"
DOOR_PREDICT = f"/api/v1/models/{MODEL}/predict"
REDIS_DB = 15
NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream replicas {{
        least_conn;
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 32m;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A proxy process in its own session: its CPU time is counted as a replica's is."""

    cpu_seconds = Replica.cpu_seconds

    def __init__(self, name, command, log, env=None):
        self.name = name
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.log = log

    def alive(self):
        if self.process.poll() is not None:
            tail = Path(self.log).read_text()[-3000:]
            raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n{tail}")
        return True

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# -- the replicas --------------------------------------------------------------------------------


def ready(replica):
    try:
        return replica.client.get("/v1/status", timeout=2).json()["state"] == "ready"
    except (requests.RequestException, ValueError):
        return False


def start_replica(replica):
    """Start (or start again, on its port) a replica and wait until its pinned model is loaded."""
    replica.__enter__()
    wait_for(lambda: ready(replica), 120, f"replica {replica.address} to load its model")


def kill(replica):
    """SIGKILL to the replica's process group: the process dies, as on a crash."""
    os.killpg(replica.process.pid, signal.SIGKILL)
    replica.process.wait()


# -- NGINX ---------------------------------------------------------------------------------------


def start_nginx(work, replicas, weights):
    folder = work / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server {r.address} weight={w:g};" for r, w in zip(replicas, weights))
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port, servers=servers))
    nginx = Process("nginx", ["nginx", "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"),
                              "-g", "daemon off;"], folder / "nginx.out")
    client = ReplicaClient(f"127.0.0.1:{port}", TOKEN, timeout=10)
    wait_for(lambda: nginx.alive() and answers(lambda: client.get("/v1/status", timeout=2)), 30, "nginx")
    client.close()
    nginx.address = f"127.0.0.1:{port}"
    return nginx


def answers(call):
    try:
        return call().status_code == 200
    except requests.RequestException:
        return False


# -- the front door and its database -------------------------------------------------------------


def door_available():
    return (REPO / "routing" / "asgi.py").exists()


def seed(replicas, weights, spec):
    """The rows the front door reads: returns the user's API token key."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from reservations.models import GPU, Allocation, Membership, Node, Reservation, Team
    from reservations.services import Device, node_register
    from routing.models import GpuWeight
    from serving.models import Model, ModelVersion
    from serving.models import Replica as ReplicaRow
    from serving.models import Serving

    # Two nodes: the first holds the first two replicas' devices, the second the rest.
    hosts = ["bench-router-a", "bench-router-b"]
    placement = [hosts[0] if i < 2 else hosts[1] for i in range(len(replicas))]
    for host in hosts:
        count = placement.count(host)
        if count:
            node_register(hostname=host, devices=[Device(index=i, model="cpu", memory_mb=0) for i in range(count)])
    now = timezone.now()
    with transaction.atomic():
        team = Team.objects.create(name="Bench router", slug="bench-router")
        user = get_user_model().objects.create(username="bench-router")
        Membership.objects.create(team=team, user=user)
        key = Token.objects.create(user=user).key
        model = Model.objects.create(team=team, name=MODEL, created_by=user, last_version=1)
        ModelVersion.objects.create(model=model, version=1, imgsz=spec["imgsz"], class_names=spec["class_names"],
                                    size=spec["size"], sha256=spec["sha256"], created_by=user)
        gpus = []
        for host in hosts:
            gpus += list(GPU.objects.filter(node__hostname=host).order_by("index"))
        start, end = now - timedelta(minutes=1), now + timedelta(days=1)
        reservation = Reservation.objects.create(
            user=user, team=team, title="router bench", start=start, end=end, status=Reservation.Status.ACTIVE,
            gpu_count=len(gpus), allow_multi_node=True,
        )
        Allocation.objects.bulk_create(Allocation(reservation=reservation, gpu=g, start=start, end=end) for g in gpus)
        serving = Serving.objects.create(
            reservation=reservation, status=Serving.Status.SERVING, started_at=now, resolved=[spec],
            spec={"models": [MODEL], "preload": [MODEL], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None},
        )
        resident = [{"name": MODEL, "version": 1, "sha256": spec["sha256"]}]
        for index, (replica, gpu, weight) in enumerate(zip(replicas, gpus, weights), start=1):
            GpuWeight.objects.create(gpu=gpu, weight=weight)
            # Its primary key is the id the process was started with, so both name it alike.
            ReplicaRow.objects.create(
                pk=index, serving=serving, gpu=gpu, node=gpu.node, device="cpu", address=replica.address, token=TOKEN,
                state=ReplicaRow.State.READY, resident=resident, memory_budget=10**9, ready_at=now, reason="Serving.",
            )
        Node.objects.filter(hostname__in=hosts).update(online=True, last_heartbeat=now)
    return key


class Heartbeats(threading.Thread):
    """Keeps the bench's nodes heart-beating (no node agent runs here) while the front door runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def run(self):
        from django.db import connection
        from django.utils import timezone

        from reservations.models import Node

        while not self.stopping.wait(1):
            Node.objects.filter(hostname__startswith="bench-router-").update(online=True, last_heartbeat=timezone.now())
        connection.close()

    def stop(self):
        self.stopping.set()
        self.join()


def start_door(work, env):
    port = free_port()
    door = Process("the front door", [sys.executable, "-m", "uvicorn", "routing.asgi:app", "--host", "127.0.0.1",
                                      "--port", str(port), "--log-level", "warning", "--no-access-log"],
                   work / "door.log", env=env)
    door.address = f"127.0.0.1:{port}"
    healthz = f"http://{door.address}/healthz"
    wait_for(lambda: door.alive() and answers(lambda: requests.get(healthz, timeout=2)), 60,
             f"the front door's /healthz (log: {work / 'door.log'})")
    return door


# -- clients -------------------------------------------------------------------------------------


def replica_of(body):
    """The replica id an answer names (the replica's own field, or the front door's)."""
    named = body.get("replica")
    if isinstance(named, dict):
        named = named.get("id")
    return named


def sender(mode, replicas, door_key, target):
    """A function making one client's senders: send() -> (ok, replica id or None, error text)."""
    counter = itertools.count()

    def make():
        if mode == "direct":
            clients = [ReplicaClient(replicas[0].address, TOKEN, timeout=60)]
        elif mode == "round-robin":
            clients = [ReplicaClient(r.address, TOKEN, timeout=60) for r in replicas]
        elif mode == "nginx":
            clients = [ReplicaClient(target.address, TOKEN, timeout=60)]
        else:
            session = requests.Session()
            session.headers["Authorization"] = f"Token {door_key}"
            url = f"http://{target.address}{DOOR_PREDICT}"

        def post(image):
            if mode == "door":
                return session.post(url, data=image, headers={"Content-Type": "image/png"}, timeout=60)
            client = clients[next(counter) % len(clients)]
            return client.post(PREDICT, image, "image/png")

        def send(image):
            try:
                response = post(image)
            except requests.RequestException as exc:
                return False, None, type(exc).__name__
            if response.status_code != 200:
                return False, None, f"{response.status_code} {response.text[:120]}"
            return True, replica_of(response.json()), None

        def close():
            for client in clients if mode != "door" else []:
                client.close()
            if mode == "door":
                session.close()

        return send, close

    return make


def closed_loop(make, image, clients, seconds, warmup=1.0, during=None):
    """`clients` threads, each sending its next request on the last answer, for warmup + seconds.
    Returns (start of the measured window, [(began, done, ok, replica, error)] of requests begun in it).
    `during(t0)` runs in this thread meanwhile (the failover's kill)."""
    t0 = time.monotonic() + warmup
    stop = t0 + seconds
    records = [[] for _ in range(clients)]

    def client(index):
        send, close = make()
        try:
            while (began := time.monotonic()) < stop:
                ok, replica, error = send(image)
                if began >= t0:
                    records[index].append((began, time.monotonic(), ok, replica, error))
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    if during:
        during(t0)
    for thread in threads:
        thread.join()
    return t0, [r for own in records for r in own]


def measure(make, image, clients, seconds, processes):
    """One closed-loop round: its records, measured seconds, and CPU seconds by component."""
    client_cpu, busy = time.process_time(), machine_busy_seconds()
    cpu = {name: sum(p.cpu_seconds() for p in group) for name, group in processes.items()}
    wall = time.monotonic()
    t0, records = closed_loop(make, image, clients, seconds, warmup=0.5)
    wall = time.monotonic() - wall
    used = {name: sum(p.cpu_seconds() for p in group) - cpu[name] for name, group in processes.items()}
    used["client"] = time.process_time() - client_cpu
    used["machine"] = machine_busy_seconds() - busy
    measured = max((r[1] for r in records), default=t0) - t0
    return records, measured, used, wall


def summary(rounds, replicas):
    """A row from a path's rounds: req/s over their measured time, latency percentiles over all
    their requests, CPU in cores over their wall time."""
    records = [r for own, *_ in rounds for r in own]
    measured = sum(m for _, m, _, _ in rounds)
    wall = sum(w for *_, w in rounds)
    ok = [r for r in records if r[2]]
    latencies = [(done - began) * 1000 for began, done, *_ in ok]
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "first_error": next((r[4] for r in records if not r[2]), None),
        "throughput": len(ok) / measured if ok else 0.0,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "by_replica": [sum(1 for r in ok if r[3] == index) for index in range(1, replicas + 1)],
        "cpu": {name: sum(u[name] for _, _, u, _ in rounds) / wall for name in rounds[0][2]},
    }


# -- the parts -----------------------------------------------------------------------------------


def spreading(modes, image, concurrencies, seconds, rounds, processes):
    """Per concurrency, the paths take turns for `rounds` rounds of seconds/rounds each, so that
    other work on the machine weighs on each path alike."""
    rows = []
    for clients in concurrencies:
        taken = {mode: [] for mode, _ in modes}
        for _ in range(rounds):
            for mode, make in modes:
                taken[mode].append(measure(make, image, clients, seconds / rounds, processes))
        for mode, _ in modes:
            row = summary(taken[mode], len(processes["replicas"]))
            row.update(mode=mode, clients=clients)
            rows.append(row)
            print(f"  {mode} x{clients}: {row['throughput']:.1f} req/s, p50 {row['p50']:.1f} ms, "
                  f"{row['errors']} errors{' (' + row['first_error'] + ')' if row['errors'] else ''}",
                  file=sys.stderr, flush=True)
    return rows


def share(counts):
    total = sum(counts)
    return " / ".join(f"{100 * c / total:.0f}%" if total else "-" for c in counts)


def print_spreading(rows, weights, seconds, rounds):
    total = sum(weights)
    print(f"\n## 1. Throughput, latency and spreading (closed loop, {seconds:g} s per row: {rounds} turns of "
          f"{seconds / rounds:g} s, each after 0.5 s of warm-up, the paths alternating; "
          f"replicas' weights {' / '.join(f'{w:g}' for w in weights)}, "
          f"shares by weight {' / '.join(f'{100 * w / total:.0f}%' for w in weights)})\n")
    print("| clients | path | req/s | p50 ms | p99 ms | errors | requests per replica | share per replica "
          "| CPU cores: replicas | proxy | client | other | proxy CPU ms per request |")
    print("|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        proxy = r["cpu"].get(r["mode"], 0.0)  # the nginx or door process; nothing for the others
        other = max(0.0, r["cpu"]["machine"] - r["cpu"]["replicas"] - proxy - r["cpu"]["client"])
        print(f"| {r['clients']} | {r['mode']} | {r['throughput']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} "
              f"| {r['errors']} | {' / '.join(str(c) for c in r['by_replica'])} | {share(r['by_replica'])} "
              f"| {r['cpu']['replicas']:.2f} | {proxy:.2f} | {r['cpu']['client']:.2f} | {other:.2f} "
              f"| {per_request(proxy, r['throughput'])} |")
    sys.stdout.flush()


def per_request(cores, throughput):
    return f"{1000 * cores / throughput:.2f}" if cores and throughput else "-"


def print_overhead(rows):
    at_one = {r["mode"]: r for r in rows if r["clients"] == 1}
    direct = at_one.get("direct")
    if not direct:
        return
    print("\n## 2. Overhead per request at concurrency 1 (against calling the replica directly)\n")
    print("| path | p50 ms | p99 ms | p50 over direct ms | p99 over direct ms |")
    print("|---|---:|---:|---:|---:|")
    for mode in ("direct", "round-robin", "nginx", "door"):
        r = at_one.get(mode)
        if r:
            print(f"| {mode} | {r['p50']:.1f} | {r['p99']:.1f} | {r['p50'] - direct['p50']:+.1f} "
                  f"| {r['p99'] - direct['p99']:+.1f} |")
    sys.stdout.flush()


def served_by(make, image, index, limit=30):
    """(seconds, requests) one client took to get an answer from replica `index`; seconds is None
    when none came within `limit` seconds."""
    send, close = make()
    began, sends = time.monotonic(), 0
    try:
        while time.monotonic() - began < limit:
            ok, replica, _ = send(image)
            sends += 1
            if ok and replica == index:
                return time.monotonic() - began, sends
        return None, sends
    finally:
        close()


def failover(mode, make, image, replicas, victim, seconds, clients=16):
    """Once the path sends requests to `victim` (a previous kill may have it still held out), kill
    it 2 s (at most a third of the run) into the measured window; then start it again and time its
    return."""
    index = replicas.index(victim) + 1
    if served_by(make, image, index)[0] is None:
        raise SystemExit(f"{mode}: replica {index} gets no requests before the failover run")
    killed = {}
    kill_after = min(2.0, seconds / 3)

    def during(t0):
        time.sleep(max(0.0, t0 + kill_after - time.monotonic()))
        kill(victim)
        killed["at"] = time.monotonic()

    t0, records = closed_loop(make, image, clients, seconds, during=during)
    errors = [r for r in records if not r[2]]
    before = [r for r in records if r[1] < killed["at"] and r[2]]
    after = [r for r in records if r[0] >= killed["at"]]
    ok_after = [(done - began) * 1000 for began, done, ok, *_ in after if ok]
    row = {
        "mode": mode,
        "requests": len(records),
        "victim_before": sum(1 for r in before if r[3] == index) / len(before) if before else 0.0,
        "errors": len(errors),
        "error_kinds": sorted({e[4].split(" ", 1)[0] if e[4] else "?" for e in errors}),
        "last_error_s": max(e[1] for e in errors) - killed["at"] if errors else None,
        "after_p99": percentile(ok_after, 99),
        "after_throughput": len(ok_after) / (max(r[1] for r in after) - killed["at"]) if ok_after else 0.0,
        "victim_after": sum(1 for r in after if r[2] and r[3] == index),
    }
    start_replica(victim)
    row["readmitted_s"], row["readmit_sends"] = served_by(make, image, index)
    print(f"  failover {mode}: {row['errors']} errors, last {row['last_error_s']} s after the kill", file=sys.stderr,
          flush=True)
    return row


def print_failover(rows, seconds, victim_weight):
    print(f"\n## 3. Failover: 16 clients for {seconds:g} s; the replica of weight {victim_weight:g} is killed "
          f"(SIGKILL) 2 s in, then started again on its port after the run\n")
    print("| path | requests | dead replica's share before the kill | errors | error kinds | kill -> last error s "
          "| req/s after the kill | p99 after the kill ms | answers from the dead replica after "
          "| started again -> served by it again s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        last = "-" if r["last_error_s"] is None else f"{r['last_error_s']:.2f}"
        back = "> 30" if r["readmitted_s"] is None else f"{r['readmitted_s']:.2f}"
        back += f" ({r['readmit_sends']} requests)"
        print(f"| {r['mode']} | {r['requests']} | {100 * r['victim_before']:.0f}% | {r['errors']} "
              f"| {', '.join(r['error_kinds']) or '-'} | {last} "
              f"| {r['after_throughput']:.1f} | {r['after_p99']:.1f} | {r['victim_after']} | {back} |")
    sys.stdout.flush()


def lscpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "CPU max MHz", "Hypervisor vendor")
    return "; ".join(f"{k}: {fields[k].strip()}" for k in keep if k in fields)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter rows (about 3 minutes)")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per row (part 1)")
    parser.add_argument("--rounds", type=int, default=3, help="turns the paths take per concurrency (part 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--weights", type=float, nargs="+", default=[1, 1, 2], help="one replica per weight")
    parser.add_argument("--failover-seconds", type=float, default=10, help="length of a failover run (part 3)")
    parser.add_argument("--modes", nargs="+", default=["direct", "round-robin", "nginx", "door"],
                        choices=["direct", "round-robin", "nginx", "door"])
    parser.add_argument("--db", default="gpu_bench_router", help="recreated each run (for the front door)")
    parser.add_argument("--work", type=Path, help="keep the weights and logs here (reused next time)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.failover_seconds = 3, 6

    import torch

    print(f"machine: {machine()}; {lscpu()}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"clients (threads in this process), proxies and {len(args.weights)} replicas all share these "
          f"{os.cpu_count()} CPUs", flush=True)
    modes = list(args.modes)
    if "door" in modes and not door_available():
        print("front door: routing/asgi.py is not there yet; its rows are left out", flush=True)
        modes.remove("door")
    work = args.work or Path(tempfile.mkdtemp(prefix="router-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.work is None:
            stack.callback(shutil.rmtree, work, True)
        best, image = make_weights(work)
        spec = model_spec(MODEL, best, pinned=True)
        replicas = []
        for index, _ in enumerate(args.weights, start=1):
            replica = Replica(work, f"router-{index}", [spec], replica=index)
            stack.callback(replica.__exit__, None, None, None)
            start_replica(replica)
            replicas.append(replica)
        processes = {"replicas": replicas}
        makers = {mode: sender(mode, replicas, None, None) for mode in ("direct", "round-robin")}
        if "nginx" in modes:
            nginx = start_nginx(work, replicas, args.weights)
            stack.callback(nginx.stop)
            processes["nginx"] = [nginx]
            makers["nginx"] = sender("nginx", replicas, None, nginx)
        if "door" in modes:
            # The team's rate limit is raised out of the way (its default, 100/s, is below what 64 clients ask);
            # the rest of the router's settings are the defaults.
            env = {"ROUTER_TEAM_RATE": "100000/second",
                   "CACHE_URL": f"redis://127.0.0.1:6379/{REDIS_DB}", "ALLOWED_HOSTS": "127.0.0.1,localhost"}
            setup_environment(args.db, work, redis_db=REDIS_DB, **env)
            key = seed(replicas, args.weights, spec)
            heartbeats = Heartbeats()
            heartbeats.start()
            stack.callback(heartbeats.stop)
            door = start_door(work, dict(os.environ))
            stack.callback(door.stop)
            processes["door"] = [door]
            makers["door"] = sender("door", replicas, key, door)
            send, close = makers["door"]()
            wait_for(lambda: send(image)[0], 30, f"the front door's first answer (log: {work / 'door.log'})")
            close()
        # Warm every path (connections, the door's first reads) out of the figures.
        for mode in modes:
            closed_loop(makers[mode], image, 4, 1.0, warmup=0)
        rows = spreading([(m, makers[m]) for m in modes], image, args.concurrency, args.seconds, args.rounds, processes)
        print_spreading(rows, args.weights, args.seconds, args.rounds)
        print_overhead(rows)
        victim = replicas[max(range(len(replicas)), key=lambda i: (args.weights[i], i))]
        fails = [failover(mode, makers[mode], image, replicas, victim, args.failover_seconds)
                 for mode in ("nginx", "door") if mode in modes]
        if fails:
            print_failover(fails, args.failover_seconds, max(args.weights))
    print(f"\ntook {time.monotonic() - began:.0f} s, load average {os.getloadavg()[0]:.2f}"
          f" (logs: {work if args.work else 'removed with the temporary folder'})")


if __name__ == "__main__":
    main()
