"""The quick start's filesystem broker keeps everything under VAR_DIR, nothing in the working
directory (the repository root under honcho)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow


def wait_for_line(log, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {text!r} in the worker's log:\n{log.read_text()}")


def test_a_worker_on_the_filesystem_broker_writes_only_under_var_dir(tmp_path):
    workdir, var_dir, log = tmp_path / "cwd", tmp_path / "var", tmp_path / "worker.log"
    workdir.mkdir()
    repository_before = set(os.listdir(settings.BASE_DIR))
    env = dict(
        os.environ, CELERY_BROKER_URL="filesystem://", VAR_DIR=str(var_dir), PYTHONPATH=str(settings.BASE_DIR),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    with open(log, "wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "scheduler", "worker", "-Q", "celery", "--pool", "solo",
             "-n", "filesystem@%h", "--loglevel", "INFO"],
            cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(log, " ready.", 90)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    assert list(workdir.iterdir()) == []
    assert set(os.listdir(settings.BASE_DIR)) - repository_before - {"var"} == set()
    # The exchange bindings, the workers' remote-control (pidbox) one included, are where they belong.
    assert {"celery.exchange", "celery.pidbox.exchange"} <= set(os.listdir(var_dir / "celery" / "control"))
