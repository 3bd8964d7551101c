"""Starting and stopping the training child process on a node."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from .runner import job_dirs

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"


def child_environment(devices):
    """The child sees exactly the booked devices (`devices`: CUDA indices, or [] for CPU devices)."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices) if devices else ""
    env["YOLO_OFFLINE"] = "1"
    env.setdefault("YOLO_CONFIG_DIR", str(Path(settings.VAR_DIR) / "ultralytics"))
    # The child must use the database this process uses (a test database too).
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        user = f"{db['USER']}@" if db.get("USER") else ""
        env["DATABASE_URL"] = f"postgres://{user}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(job, devices):
    """Start job `job` training on `devices` in a child process with its own log. Returns the Popen."""
    run_dir, _ = job_dirs(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    log = open(log_path, "ab")
    try:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE_PY), "run_training_job", str(job.pk)],
            env=child_environment(devices),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a stop reaches DDP ranks too
        )
    finally:
        log.close()
    return process, log_path


def stop(process, grace_seconds):
    """SIGTERM the child's group; SIGKILL it if still there after `grace_seconds`. True if it exited
    by itself (so its checkpoint is the stop's), False if it had to be killed."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    process.wait()
    return False
