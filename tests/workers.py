"""Real processes for tests: `celery -A scheduler worker` processes against the test database and
Redis, as production runs them, and a Redis of a test's own for tests that stop their broker."""

import os
import signal
import socket
import subprocess
import sys

import redis
from django.conf import settings
from django.db import connection

from reservations.models import Node
from trainer.models import TrainingJob

from .support import wait_for


def celery(log, arguments, env):
    """`celery -A scheduler <arguments>` against the test database, its output appended to `log`."""
    db = connection.settings_dict
    env = dict(os.environ, DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}", **env)
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "scheduler", *arguments, "--loglevel", "INFO"],
            cwd=settings.BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT,
        )


class Worker:
    """A worker process on `queues`, with `env` on top of this process's environment."""

    def __init__(self, log, queues, name, **env):
        self.log, self.queues, self.name, self.env = log, queues, name, env
        self.process = None

    def start(self):
        self.process = celery(
            self.log,
            ["worker", "-Q", ",".join(self.queues), "--pool", "threads", "--concurrency", "4", "-n", f"{self.name}@%h"],
            self.env,
        )
        return self

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


class NodeWorker(Worker):
    """A GPU node's worker (its node agent trains there), here with two CPU devices. With
    `central`, it also takes the central queue (reclaims, notice delivery)."""

    def __init__(self, log, host, central=False, **env):
        queues = [f"node.{host}"] + (["celery"] if central else [])
        # No telemetry exporter unless a test asks for one: several node workers at once would all
        # try the default port.
        env = dict(
            dict(NODE_AGENT_HOSTNAME=host, NODE_DEVICES="cpu", CPU_DEVICE_COUNT="2", STOP_GRACE_SECONDS="60",
                 HEARTBEAT_SECONDS="1", NODE_METRICS_PORT="0"),
            **env,
        )
        super().__init__(log, queues, host, **env)
        self.host = host

    def start(self):
        super().start()
        wait_for(lambda: Node.objects.filter(hostname=self.host, online=True).exists(), 60, "the node to register")
        return self


def purge_central_queue():
    """Drop central tasks queued by earlier tests (their rows are gone) before a worker takes it."""
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "scheduler", "purge", "-f", "-Q", "celery"],
        cwd=settings.BASE_DIR, check=True, capture_output=True,
    )


def kill_training_children():
    """No training child may outlive a test."""
    for job in TrainingJob.objects.exclude(pid=None):
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class RedisServer:
    """A redis-server of a test's own on a free port, in `directory`, keeping nothing on disk: a test
    may stop and restart it without disturbing the Redis that other tests and workers share."""

    def __init__(self, directory):
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(self.answers, 30, f"redis-server on port {self.port}")
        return self

    def answers(self):
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return client.ping()
        except redis.ConnectionError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()  # redis-server shuts down on SIGTERM; with --save "" it writes nothing
            self.process.wait(timeout=30)


class Beat:
    """A `celery beat` process with a schedule file of its own (two beats must not share one), and
    `env` on top of this process's environment (TICK_SECONDS=1 for a fast clock)."""

    def __init__(self, log, schedule, **env):
        self.log, self.schedule, self.env = log, schedule, env
        self.process = None

    def start(self):
        self.process = celery(self.log, ["beat", "-s", str(self.schedule)], self.env)
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
