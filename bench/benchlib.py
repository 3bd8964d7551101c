"""What the benchmarks share: a fresh database, migrations and Django set-up, a node worker, polling,
percentiles and a description of the machine."""

import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def recreate_database(name):
    """Drop and create database `name`; returns the server's version."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        # FORCE: a previous run's server or worker left behind must not keep the database alive.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        return conn.execute("SHOW server_version").fetchone()[0]


def migrate(env=None):
    """Migrate the database the environment (this process's, or `env`) names."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=REPO, env=env, check=True)


def in_process_env(db, **extra):
    """The environment of a benchmark that runs Django in its own process against database `db`
    (requests through the test client: no server)."""
    return {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "SECRET_KEY": "bench-only",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "testserver",
        "DJANGO_SETTINGS_MODULE": "scheduler.settings",
        **extra,
    }


def django_setup(env):
    """Set Django up in this process with `env` on top of its environment (the settings read only it)."""
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def setup_environment(db, work, *, redis_db, **env):
    """Recreate database `db`, point this process (and the workers it starts) at it, migrate, and
    set Django up. `env` adds or overrides settings."""
    recreate_database(db)
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        SECRET_KEY="bench",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        TRAINING_DATA_ROOTS=str(work / "data"),
        TRAINING_RUNS_DIR=str(work / "runs"),
        VAR_DIR=str(work / "var"),
        HEARTBEAT_SECONDS="1",
        DJANGO_SETTINGS_MODULE="scheduler.settings",
        **env,
    )
    migrate()
    subprocess.run([sys.executable, "-m", "celery", "-A", "scheduler", "purge", "-f"], cwd=REPO, check=True,
                   capture_output=True)
    django_setup({})


def start_worker(log, host, *, central=False, concurrency=2):
    """The node worker of `host` (its agent trains there); with `central`, it takes the central
    queue too. In its own session, so the caller can stop it with its children."""
    queues = f"node.{host}" + (",celery" if central else "")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "scheduler", "worker", "-Q", queues, "--pool", "threads",
         "--concurrency", str(concurrency), "-n", f"{host}@%h", "--loglevel", "WARNING"],
        cwd=REPO, env=dict(os.environ, NODE_AGENT_HOSTNAME=host), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    return f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}, Python {platform.python_version()}"


def spec_maker(data):
    """spec(epochs): a validated YOLOv8n job spec on the dataset `data` (64 px, batch 4, seed 0)."""
    from trainer.spec import JobSpecSerializer

    def spec(epochs):
        serializer = JobSpecSerializer(
            data={"model": "yolov8n.yaml", "data": str(data), "epochs": epochs, "imgsz": 64, "batch": 4, "seed": 0}
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    return spec
