"""Starting and stopping the child processes a node's agent supervises: training jobs, and (through
the agent's node_supervisors) serving replicas."""

import ctypes
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
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # In the child, before exec: SIGTERM it when the thread that started it dies (a worker killed
    # with SIGKILL), so it stops between batches with a checkpoint instead of training on unwatched.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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


def spawn(job, devices, *, die_with_parent=False):
    """Start job `job` training on `devices` in a child process with its own log.
    Returns (Popen, log path)."""
    run_dir, _ = job_dirs(job)
    log_path = run_dir / "train.log"
    command = [sys.executable, str(MANAGE_PY), "run_training_job", str(job.pk)]
    return spawn_process(command, child_environment(devices), log_path, die_with_parent=die_with_parent), log_path


def spawn_process(command, env, log_path, *, die_with_parent=False):
    """Start `command` in its own process group (a stop reaches every process it starts: DDP ranks,
    a server's workers), its output appended to `log_path`. Returns the Popen."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    finally:
        log.close()


def command_line_has(pid, *parts):
    """Whether process `pid` is still one of ours: each of `parts` is a word of its command line (a
    pid recorded before a restart may belong to another program by now)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        return False
    return all(part.encode() in words for part in parts)


def terminate_orphan(pid, grace_seconds):
    """SIGTERM the process group of `pid` (a child a dead worker left behind) and SIGKILL it if it is
    still there after `grace_seconds`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process, grace_seconds, before_kill=None):
    """SIGTERM the child's group; SIGKILL it if still there after `grace_seconds` (calling
    `before_kill` first). True if it exited by itself (so its checkpoint is the stop's), False if it
    had to be killed."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.2)
    if before_kill is not None:
        before_kill()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    process.wait()
    return False
