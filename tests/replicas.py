"""Real inference processes for tests: replicas (`python -m serving.replica cfg.json`, uvicorn, CPU)
on free ports, and the front door (`python -m routing`) against the test database."""

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.db import connection
from PIL import Image

from serving.signing import ReplicaClient

from .support import wait_for

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "5e" * 16
ONE_MODEL = 13_000_000  # yolov8n loaded for inference measures 12.02 MB on CPU


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spec(name, path, version=1, pinned=False):
    data = Path(path).read_bytes()
    return {
        "name": name, "version": version, "sha256": hashlib.sha256(data).hexdigest(), "path": str(path),
        "imgsz": 64, "class_names": ["square", "bar"], "size": len(data), "pinned": pinned,
    }



def terminate(process):
    """SIGTERM (a replica drains, the front door shuts down), SIGKILL after 30 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

class Replica:
    """One replica process on a free port, its log in `folder`."""

    def __init__(self, folder, models, **settings):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.config = {
            "replica": 7, "bind": "127.0.0.1", "port": self.port, "token": TOKEN, "device": "cpu",
            "memory_budget": 10 * ONE_MODEL, "max_batch": 8, "max_delay_ms": 0, "drain_seconds": 10,
            "metrics_token": "", "models": models, **settings,
        }
        self.path = folder / "replica.json"
        self.path.write_text(json.dumps(self.config))
        self.path.chmod(0o600)
        self.client = ReplicaClient(f"127.0.0.1:{self.port}", TOKEN)
        self.process = None

    def start(self):
        return self.launch().ready()

    def launch(self):
        """Start the process without waiting for it (start several, then wait for each with `ready`)."""
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(self.folder / "ultralytics")}
        with open(self.folder / "replica.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.replica", str(self.path)], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def ready(self):
        wait_for(self.answers, 60, f"the replica on port {self.port} (log: {self.folder / 'replica.log'})")
        return self

    def answers(self):
        """Up and ready: status answers "loading" while the pinned models preload."""
        assert self.process.poll() is None, (self.folder / "replica.log").read_text()
        try:
            response = self.client.get("/v1/status", timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet
            return False
        return response.status_code == 200 and response.json()["state"] == "ready"

    def stop(self):
        terminate(self.process)

    def kill(self):
        """SIGKILL to its process group: gone at once, as when its machine dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def status(self):
        return self.client.get("/v1/status").json()

    def log(self):
        return (self.folder / "replica.log").read_text(errors="replace")

    def model(self, name, version=1):
        return next(m for m in self.status()["models"] if (m["name"], m["version"]) == (name, version))

    def predict(self, ref, body=None, content_type="image/png", query=""):
        return self.client.post(f"/v1/models/{ref}/predict{query}", jpeg() if body is None else body, content_type)

    def metric(self, line_start):
        """The value of the first metrics line starting with `line_start` (0 when there is none)."""
        text = self.client.get("/metrics").text
        values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(line_start)]
        return float(values[0]) if values else 0


def jpeg(width=96, height=72, colour=(200, 30, 30), kind="JPEG"):
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste(colour, (width // 4, height // 4, width // 2, height // 2))
    image.save(buffer, kind)
    return buffer.getvalue()


class FrontDoor:
    """The front door (`python -m routing`, uvicorn) on a free port, against the test database, with
    `env` (ROUTER_* settings) on top of this process's environment; its log in `log`."""

    def __init__(self, log, **env):
        self.log = log
        self.port = free_port()
        db = connection.settings_dict
        self.env = {
            **os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(self.port), **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "routing"], cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT,
            )
        wait_for(self.answers, 60, f"the front door on port {self.port} (log: {self.log})")
        return self

    def answers(self):
        assert self.process.poll() is None, self.log.read_text()
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def stop(self):
        terminate(self.process)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()  # started, but never answered
            raise

    def __exit__(self, *exc_info):
        self.stop()

    def metric(self, line_start):
        """The sum of the metrics lines starting with `line_start`."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def closed_by_server(connection, seconds, trickle=b""):
    """Whether the server closes `connection` within `seconds` while the client sends one byte of
    `trickle` every quarter of a second (nothing, when empty)."""
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        try:
            if sent < len(trickle):
                connection.sendall(trickle[sent:sent + 1])
                sent += 1
            if connection.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False
