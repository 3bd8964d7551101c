"""The inference replica on this machine's CPU: cold load against warm requests, dynamic batching under
a fixed offered load, and the LRU model cache under a Zipf-distributed workload.

    .venv/bin/python bench/replicas.py [--quick] [--sizes 64 640] [--seconds 15] [--rate R]
                                      [--requests 300] [--device cpu|cuda:N] [--work DIR]

No database, no downloads: real replica processes (`python -m serving.replica <config.json>`,
Starlette under uvicorn) driven over signed HTTP. The weights are made first, as the serving tests make theirs:
yolov8n.yaml trained for one epoch at 64 px on the synthetic dataset in a subprocess (YOLO_OFFLINE=1),
and ten distinct models are that checkpoint re-saved with another "date" field (same network, its
own SHA-256). --work keeps them in DIR for the next run (default: a temporary folder, removed).

1. Cold against warm, per image size: a fresh replica serving one unpinned model; its first request
   (load_ms is the load: hash check, torch.load, fuse, warm-up at the model's imgsz; the first load
   in a process also imports torch and ultralytics), then warm requests one at a time, then reloads
   (unload, then a request). At 640 the model is the same network with imgsz 640 in its config, so
   it warms up and predicts at 640 (the 64 px image is scaled up to 640 by ultralytics).
2. Batching: one pinned model, max_delay_ms 10, max_batch 1, 4, 8 and 16. The batch-1 capacity is
   measured first (closed loop, 8 clients); each setting is then offered 1.5x that rate open-loop
   (request i is due at start + i/rate, whatever the answers; latency counts from when it was due).
3. Cache: a seeded Zipf(s) sequence of requests over ten models, one client, with a budget of 3.5x
   one model's measured bytes (holds 3), a budget holding all ten with all ten loaded first, and a
   load per request (each request's model unloaded after its answer).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchlib import REPO, machine, percentile, wait_for

sys.path.insert(0, str(REPO))  # the project's packages, for the client and the dataset
from serving.signing import ReplicaClient  # noqa: E402
from trainer.dataset import CLASSES, make_dataset  # noqa: E402

TOKEN = "be" * 16
MODELS = 10
TRAIN = """
import sys
from ultralytics import YOLO
model = YOLO(sys.argv[1])
model.train(data=sys.argv[2], epochs=1, imgsz=64, batch=4, device="cpu", workers=0, plots=False, amp=False,
            project=sys.argv[3], name="train", exist_ok=True, verbose=False, val=True)
"""


# -- weights -------------------------------------------------------------------------------------


def make_weights(work):
    """best.pt of a one-epoch yolov8n run at 64 px (reused when `work` already holds it) and the
    synthetic image the requests send."""
    best = work / "train" / "weights" / "best.pt"
    data = work / "data" / "data.yaml"
    if not data.exists():
        make_dataset(work / "data", images=16, size=64)
    if not best.exists():
        began = time.monotonic()
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "ultralytics")}
        subprocess.run(
            [sys.executable, "-c", TRAIN, "yolov8n.yaml", str(data), str(work)],
            check=True, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=900,
        )
        print(f"weights: yolov8n.yaml trained 1 epoch at 64 px in {time.monotonic() - began:.0f} s", flush=True)
    image = sorted((work / "data" / "images" / "val").glob("*.png"))[0]
    return best, image.read_bytes()


def variants(best, work, count):
    """`count` copies of `best` with a different "date": the same network, each its own file hash."""
    import torch

    paths = []
    for index in range(count):
        target = work / f"variant-{index}.pt"
        if not target.exists():
            checkpoint = torch.load(best, map_location="cpu", weights_only=False)
            checkpoint["date"] = f"bench variant {index}"
            torch.save(checkpoint, target)
        paths.append(target)
    return paths


def model_spec(name, path, imgsz=64, pinned=False):
    data = Path(path).read_bytes()
    return {
        "name": name, "version": 1, "sha256": hashlib.sha256(data).hexdigest(), "path": str(path),
        "imgsz": imgsz, "class_names": list(CLASSES), "size": len(data), "pinned": pinned,
    }


# -- a replica process ---------------------------------------------------------------------------


class Replica:
    """One `python -m serving.replica` process on a free port; `with Replica(...) as replica:`."""

    device = "cpu"

    def __init__(self, work, label, models, **settings):
        self.folder = work / f"replica-{label}"
        self.folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        config = {
            "replica": 1, "bind": "127.0.0.1", "port": self.port, "token": TOKEN, "device": self.device,
            "memory_budget": 10**9, "max_batch": 8, "max_delay_ms": 10, "drain_seconds": 5, "metrics_token": "",
            "models": models, **settings,
        }
        self.config_path = self.folder / "replica.json"
        self.config_path.write_text(json.dumps(config))
        self.config_path.chmod(0o600)
        self.log = self.folder / "replica.log"
        self.client = ReplicaClient(self.address, TOKEN, timeout=120)
        self.process = None
        self.start_seconds = None

    def __enter__(self):
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(self.folder / "ultralytics")}
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.replica", str(self.config_path)], cwd=REPO, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(self._answers, 120, f"the replica on {self.address} (log: {self.log})")
        self.start_seconds = time.monotonic() - began
        return self

    def __exit__(self, *exc):
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _answers(self):
        if self.process.poll() is not None:
            raise SystemExit(f"the replica exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return self.client.get("/v1/status", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def status(self):
        return self.client.get("/v1/status").json()

    def cpu_seconds(self):
        """CPU time used so far by the replica's processes (gunicorn's master and worker: its session)."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == self.process.pid:  # fields[3] is the session id (field 6 of proc(5))
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def model_bytes(self, name):
        return next(m["bytes"] for m in self.status()["models"] if m["name"] == name)

    def predict(self, name, image, client=None):
        """(wall ms, body) of one request; raises on an error answer."""
        began = time.monotonic()
        response = (client or self.client).post(f"/v1/models/{name}/predict", image, "image/png")
        wall = (time.monotonic() - began) * 1000
        if response.status_code != 200:
            raise SystemExit(f"predict {name}: {response.status_code} {response.text}")
        return wall, response.json()

    def call(self, action, name):
        response = self.client.post(f"/v1/models/{name}/{action}", b"", "application/json")
        if response.status_code != 200:
            raise SystemExit(f"{action} {name}: {response.status_code} {response.text}")
        return response.json()


def machine_busy_seconds():
    """CPU seconds all processes have used so far, all cores together (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- part 1: cold against warm -------------------------------------------------------------------


def cold_and_warm(work, path, image, imgsz, warm, reloads):
    with Replica(work, f"cold-{imgsz}", [model_spec("m", path, imgsz)]) as replica:
        first_wall, first = replica.predict("m", image)
        assert first["cache"] == "miss", first
        walls, inference, queue = [], [], []
        for _ in range(warm):
            wall, body = replica.predict("m", image)
            assert body["cache"] == "hit", body
            walls.append(wall)
            inference.append(body["timings"]["inference_ms"])
            queue.append(body["timings"]["queue_ms"])
        reload_walls, reload_loads = [], []
        for _ in range(reloads):
            replica.call("unload", "m")
            wall, body = replica.predict("m", image)
            assert body["cache"] == "miss", body
            reload_walls.append(wall)
            reload_loads.append(body["timings"]["load_ms"])
        return {
            "imgsz": imgsz,
            "start_s": replica.start_seconds,
            "first_ms": first_wall,
            "first_load_ms": first["timings"]["load_ms"],
            "reload_ms": statistics.median(reload_walls),
            "reload_load_ms": statistics.median(reload_loads),
            "warm_p50": percentile(walls, 50),
            "warm_p99": percentile(walls, 99),
            "warm_inference_p50": percentile(inference, 50),
            "warm_queue_p50": percentile(queue, 50),
            "bytes": replica.model_bytes("m"),
        }


def print_cold(rows, warm, reloads):
    print(f"\n## 1. Cold load + warm-up vs warm requests (one model, one request at a time, max_batch 8, "
          f"max_delay_ms 10; warm: {warm} requests, reload: median of {reloads})\n")
    print("| imgsz | replica up (s) | first request ms (load_ms) | reload ms (load_ms) | warm p50 ms | warm p99 ms "
          "| warm queue_ms p50 | warm inference_ms p50 | model bytes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['imgsz']} | {r['start_s']:.1f} | {r['first_ms']:,.0f} ({r['first_load_ms']:,.0f}) "
              f"| {r['reload_ms']:,.0f} ({r['reload_load_ms']:,.0f}) | {r['warm_p50']:.1f} | {r['warm_p99']:.1f} "
              f"| {r['warm_queue_p50']:.1f} | {r['warm_inference_p50']:.1f} | {r['bytes']:,} |")
    sys.stdout.flush()


# -- part 2: batching under a fixed offered load -------------------------------------------------


def closed_loop(replica, image, clients, seconds):
    """Answers per second with `clients` clients each sending its next request on the last answer."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def client(index):
        own = ReplicaClient(replica.address, TOKEN, timeout=120)
        while time.monotonic() < stop:
            replica.predict("m", image, own)
            counts[index] += 1
        own.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


def open_loop(replica, image, rate, seconds, clients):
    """Request i is due at start + i/rate and sent then by a free client thread (late if none is
    free); latency counts from when it was due. Returns (due, done, body or None) per request."""
    count = max(1, int(rate * seconds))
    start = time.monotonic() + 0.5
    results = [None] * count
    taken = iter(range(count))
    lock = threading.Lock()

    def client():
        own = ReplicaClient(replica.address, TOKEN, timeout=120)
        while True:
            with lock:
                index = next(taken, None)
            if index is None:
                break
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                response = own.post("/v1/models/m/predict", image, "image/png")
                body = response.json() if response.status_code == 200 else None
            except requests.RequestException:
                body = None
            results[index] = (due, time.monotonic(), body)
        own.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start, results


def batching(work, path, image, batches, seconds, rate, clients):
    capacity = None
    if rate is None:
        with Replica(work, "capacity", [model_spec("m", path, pinned=True)], max_batch=1) as replica:
            closed_loop(replica, image, 4, 2)  # warm the process and its connections
            capacity = closed_loop(replica, image, 8, max(4, seconds / 2))
        rate = round(1.5 * capacity)
    rows = []
    for max_batch in batches:
        with Replica(work, f"batch-{max_batch}", [model_spec("m", path, pinned=True)], max_batch=max_batch,
                     max_delay_ms=10) as replica:
            for _ in range(10):
                replica.predict("m", image)
            client_cpu, replica_cpu, busy = time.process_time(), replica.cpu_seconds(), machine_busy_seconds()
            wall = time.monotonic()
            start, results = open_loop(replica, image, rate, seconds, clients)
            wall = time.monotonic() - wall
            client_cpu, replica_cpu = time.process_time() - client_cpu, replica.cpu_seconds() - replica_cpu
            other_cpu = machine_busy_seconds() - busy - client_cpu - replica_cpu
        answered = [r for r in results if r[2] is not None]
        latencies = [(done - due) * 1000 for due, done, _ in answered]
        last = max(done for _, done, _ in results)
        rows.append({
            "max_batch": max_batch,
            "sent": len(results),
            "answered": len(answered),
            "throughput": len(answered) / (last - start),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "batch": statistics.mean(body["timings"]["batch_size"] for _, _, body in answered),
            "queue": statistics.median(body["timings"]["queue_ms"] for _, _, body in answered),
            "inference": statistics.median(body["timings"]["inference_ms"] for _, _, body in answered),
            "replica_cpu": replica_cpu / wall,
            "client_cpu": client_cpu / wall,
            "other_cpu": max(0.0, other_cpu / wall),
        })
        print(f"  max_batch {max_batch}: {rows[-1]['throughput']:.1f} req/s", file=sys.stderr, flush=True)
    return capacity, rate, rows


def print_batching(capacity, rate, seconds, clients, rows):
    measured = f"1.5 x the batch-1 capacity of {capacity:.1f} req/s (closed loop, 8 clients)" if capacity else "given"
    print(f"\n## 2. Batching: offered {rate} req/s open-loop for {seconds:g} s ({measured}), {clients} client "
          f"threads, max_delay_ms 10, imgsz 64\n")
    print("| max_batch | sent | answered | achieved req/s | p50 ms | p99 ms | mean batch size | queue_ms p50 "
          "| inference_ms p50 | CPU cores: replica | client | other |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['sent']} | {r['answered']} | {r['throughput']:.1f} | {r['p50']:,.0f} "
              f"| {r['p99']:,.0f} | {r['batch']:.2f} | {r['queue']:.1f} | {r['inference']:.1f} | {r['replica_cpu']:.2f} "
              f"| {r['client_cpu']:.2f} | {r['other_cpu']:.2f} |")
    sys.stdout.flush()


# -- part 3: the model cache under a Zipf workload -----------------------------------------------


def zipf_sequence(count, models, s, seed):
    weights = [1 / rank**s for rank in range(1, models + 1)]
    return random.Random(seed).choices(range(models), weights=weights, k=count)


def cache_policies(work, paths, image, one_model, sequence):
    specs = [model_spec(f"m{i}", path) for i, path in enumerate(paths)]
    policies = [
        ("LRU, budget holds 3", int(3.5 * one_model), "lru"),
        ("always loaded (budget holds 10)", int(11 * one_model), "all"),
        ("load per request (unload after each)", int(11 * one_model), "unload"),
    ]
    rows = []
    for label, budget, policy in policies:
        with Replica(work, f"cache-{policy}", specs, memory_budget=budget) as replica:
            # Out of the timings: importing torch and ultralytics with the first load of the process.
            replica.predict("m0", image)
            replica.call("unload", "m0")
            if policy == "all":
                for spec in specs:
                    replica.call("load", spec["name"])
            loads_before = sum(m["loads"] for m in replica.status()["models"])
            walls, hits, miss_loads, unloads = [], 0, [], []
            for index in sequence:
                wall, body = replica.predict(f"m{index}", image)
                walls.append(wall)
                hits += body["cache"] == "hit"
                if body["cache"] == "miss":
                    miss_loads.append(body["timings"]["load_ms"])
                if policy == "unload":
                    began = time.monotonic()
                    replica.call("unload", f"m{index}")
                    unloads.append((time.monotonic() - began) * 1000)
            status = replica.status()
        rows.append({
            "policy": label,
            "budget": budget,
            "hit": hits / len(sequence),
            "mean": statistics.mean(walls),
            "p50": percentile(walls, 50),
            "p99": percentile(walls, 99),
            "miss_load": statistics.mean(miss_loads) if miss_loads else None,
            "unload": statistics.mean(unloads) if unloads else None,
            "loads": sum(m["loads"] for m in status["models"]) - loads_before,
            "resident": sum(m["resident"] for m in status["models"]),
        })
        print(f"  {label}: hit ratio {rows[-1]['hit']:.2f}", file=sys.stderr, flush=True)
    return rows


def print_cache(rows, sequence, s, seed, one_model):
    counts = sorted((sequence.count(i) for i in range(MODELS)), reverse=True)
    print(f"\n## 3. Cache: {len(sequence)} requests, Zipf s={s} over {MODELS} models (seed {seed}; requests per model "
          f"{counts}), one client, one model = {one_model:,} bytes\n")
    print("| policy | budget bytes | hit ratio | mean ms | p50 ms | p99 ms | load_ms of a miss, mean "
          "| unload request ms, mean | loads during the run | resident at end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['budget']:,} | {r['hit']:.2f} | {r['mean']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} "
              f"| {fmt(r['miss_load'])} | {fmt(r['unload'])} | {r['loads']} | {r['resident']} |")
    sys.stdout.flush()


def fmt(value):
    return "-" if value is None else f"{value:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter phases (about 3 minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 640], help="imgsz of part 1")
    parser.add_argument("--warm", type=int, default=30, help="warm requests per size (part 1)")
    parser.add_argument("--reloads", type=int, default=5, help="reloads per size (part 1)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16], help="max_batch values (part 2)")
    parser.add_argument("--seconds", type=float, default=15, help="open-loop phase length (part 2)")
    parser.add_argument("--rate", type=float, help="offered req/s (part 2; default 1.5x the batch-1 capacity)")
    parser.add_argument("--clients", type=int, default=64, help="client threads of the open loop (part 2)")
    parser.add_argument("--requests", type=int, default=300, help="requests of the Zipf workload (part 3)")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s (part 3)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--device", default="cpu", help="the replicas' device: cpu or cuda:N")
    parser.add_argument("--work", type=Path, help="keep the weights and replica logs here (reused next time)")
    args = parser.parse_args()
    if args.quick:
        args.warm, args.reloads, args.seconds, args.requests = 15, 3, 6, 100

    import torch
    import ultralytics

    Replica.device = args.device
    gpu = f", {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else ""
    print(f"machine: {machine()}{gpu}; replicas on {args.device}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), "
          f"ultralytics {ultralytics.__version__}; {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        best, image = make_weights(work)
        paths = variants(best, work, MODELS + len(args.sizes))
        cold = [cold_and_warm(work, paths[MODELS + i], image, imgsz, args.warm, args.reloads)
                for i, imgsz in enumerate(args.sizes)]
        print_cold(cold, args.warm, args.reloads)
        capacity, rate, rows = batching(work, paths[0], image, args.batches, args.seconds, args.rate, args.clients)
        print_batching(capacity, rate, args.seconds, args.clients, rows)
        sequence = zipf_sequence(args.requests, MODELS, args.zipf, args.seed)
        one_model = cold[0]["bytes"]
        print_cache(cache_policies(work, paths[:MODELS], image, one_model, sequence), sequence, args.zipf, args.seed,
                    one_model)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntook {time.monotonic() - began:.0f} s, load average {os.getloadavg()[0]:.2f} (logs: {work if args.work else 'removed with the temporary folder'})")


if __name__ == "__main__":
    main()
