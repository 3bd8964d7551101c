"""What the training benchmarks share: a fresh database and environment, a node worker, polling."""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def setup_environment(db, work, *, redis_db, **env):
    """Recreate database `db`, point this process (and the workers it starts) at it, migrate, and
    set Django up. `env` adds or overrides settings."""
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
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
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, check=True)
    subprocess.run([sys.executable, "-m", "celery", "-A", "scheduler", "purge", "-f"], cwd=REPO, check=True,
                   capture_output=True)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


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


def machine():
    import platform

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.platform()}, Python {platform.python_version()}"


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
