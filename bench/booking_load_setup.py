"""booking_load's set-up: the server's environment, the inventory and users, gunicorn."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from benchlib import REPO, django_setup, wait_for
from booking_load_clients import ME_URL

VENV_BIN = Path(sys.executable).parent
# The default server shape, and why (from a sweep on a 2-core box; see bench/README.md).
DEFAULT_SERVER = ("sync", 3, 1)
CONFIG_NOTE = ("default chosen from a sweep on 2 cores: booking req/s was within noise for sync x2..x4 and "
               "gthread 2x4..4x4, and sync x3 gave the lowest booking p99; gthread's keep-alive helps only "
               "the trivial phase while its GIL-sharing threads widen the tail")


def app_env(args, db_url):
    """The environment both manage.py and gunicorn run with; the settings module reads only this."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="scheduler.settings",
        DATABASE_URL=db_url,
        DEBUG="0",
        SECRET_KEY="bench-not-secret-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        # A longer horizon than the default 28 days leaves room for many distinct slots per GPU.
        BOOKING_HORIZON_DAYS=str(args.horizon_days),
    )
    return env


def seed(args, env, n_users):
    """Create nodes/GPUs, one team and `n_users` users with tokens, through the ORM in this process.

    Returns (gpu ids in id order, user tokens, SLOT_HOURS, BOOKING_HORIZON_DAYS as Django sees them).
    """
    django_setup(env)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections, transaction
    from rest_framework.authtoken.models import Token

    from reservations import services
    from reservations.models import GPU, Membership, Team
    from trainer.hardware import Device

    User = get_user_model()
    # Each registration is a transaction of its own: services refuse to run inside another one.
    for n in range(args.nodes):
        services.node_register(
            hostname=f"bench-node{n:02d}",
            devices=[Device(index=i, model="NVIDIA H100 80GB HBM3", memory_mb=81559,
                            uuid=f"GPU-bench-{n:02d}-{i}") for i in range(args.gpus_per_node)],
        )
    with transaction.atomic():
        team = Team.objects.create(name="Bench", slug="bench")
        users = []
        for i in range(n_users):
            user = User(username=f"bench{i:03d}")
            user.set_unusable_password()  # create_user would spend ~0.3 s per user hashing a password
            users.append(user)
        users = User.objects.bulk_create(users)
        Membership.objects.bulk_create(Membership(team=team, user=u) for u in users)
        tokens = Token.objects.bulk_create(Token(user=u, key=Token.generate_key()) for u in users)
    gpu_ids = list(GPU.objects.order_by("id").values_list("id", flat=True))
    result = (gpu_ids, [t.key for t in tokens], settings.SLOT_HOURS, settings.BOOKING_HORIZON_DAYS)
    connections.close_all()  # gunicorn and the clients get their own connections
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(args, env, port, log_file):
    """Start gunicorn on `port` and wait until it serves; returns (process, base URL)."""
    cmd = [
        str(VENV_BIN / "gunicorn"), "scheduler.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", args.worker_class,
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--backlog", "2048",  # the race phase opens 64 connections at once
        "--log-level", "warning",
    ]
    # Its own session, so that it can be stopped as a group (master and workers) if it will not exit.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"

    def serving():
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {proc.returncode} while starting; see {log_file.name}")
        try:
            # Any HTTP answer (401 here: no token) means a worker has loaded Django and serves.
            requests.get(base_url + ME_URL, timeout=2)
            return True
        except requests.RequestException:
            return False

    try:
        wait_for(serving, 60, f"gunicorn to answer; see {log_file.name}")
        return proc, base_url
    except BaseException:
        stop_gunicorn(proc)  # the caller never gets the handle, so stop it here
        raise


def stop_gunicorn(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created in start_gunicorn
        proc.wait(timeout=5)
