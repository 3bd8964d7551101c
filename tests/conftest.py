"""Shared fixtures: a small cluster and the people every permission test needs. Plain helpers and
constants (FROZEN_NOW, make_user, client_for, ...) live in tests/support.py.

Time is frozen at FROZEN_NOW (a Monday, 09:17 UTC) by `frozen`, so slot boundaries are predictable:
the next boundary is 10:00.
"""

import os
import subprocess
import sys

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client, override_settings

from reservations.models import Membership, Team
from reservations.services import Device, node_register
from serving.models import Model, ModelVersion
from trainer.dataset import make_dataset

from .support import FROZEN_NOW, client_for, make_user
from .workers import RedisServer


# --- Test lanes -------------------------------------------------------------------------------------
# `slow` (pytest.ini): the test starts a process (a Celery worker, a replica, the front door, slapd,
# Chromium, a training run); `bin/test --fast` leaves those out. A test that starts one without the
# mark fails, so the fast lane stays fast as tests are added. `postgres`: what only PostgreSQL
# enforces; the SQLite lane leaves those out.


def _refuse_process(self, *args, **kwargs):
    raise AssertionError("This test starts a process: mark it @pytest.mark.slow (bin/test --fast leaves those out).")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("slow") is not None:
        return (yield)
    # Popen's one way to start a child: subprocess.run, Playwright's driver and Celery's test
    # processes all come through it.
    start_child = subprocess.Popen._execute_child
    subprocess.Popen._execute_child = _refuse_process
    try:
        return (yield)
    finally:
        subprocess.Popen._execute_child = start_child


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing():
    """Django's PBKDF2 takes a third of a second a password here, by design: tests make hundreds of
    users and sign-ins, and need no protection from offline guessing."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    """Throttle and lockout counters live in the cache: each test starts with none, whatever the
    tests before it sent."""
    cache.clear()
    yield


@pytest.fixture
def frozen():
    with time_machine.travel(FROZEN_NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def cluster(db):
    """Two nodes of four GPUs each: returns {"node1": [gpu, ...], "node2": [...]}."""
    nodes = {}
    for name in ("node1", "node2"):
        node = node_register(
            hostname=name,
            devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"{name}-{i}") for i in range(4)],
        )
        nodes[name] = list(node.gpus.order_by("index"))
    return nodes


@pytest.fixture
def team(db):
    return Team.objects.create(name="Vision", slug="vision")


@pytest.fixture
def other_team(db):
    return Team.objects.create(name="Language", slug="nlp")


@pytest.fixture
def owner(team):
    return make_user("owner", team)


@pytest.fixture
def teammate(team):
    return make_user("teammate", team)


@pytest.fixture
def team_admin(team):
    return make_user("teamadmin", team, Membership.Role.ADMIN)


@pytest.fixture
def outsider(other_team):
    return make_user("outsider", other_team)


@pytest.fixture
def staff(db):
    return make_user("staff", None, is_staff=True)


@pytest.fixture
def admin_client(db):
    """A superuser signed in to the admin (`client.user` is who)."""
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    client.user = admin
    return client


@pytest.fixture
def high_booker(team):
    user = make_user("highbooker", team)
    user.user_permissions.add(Permission.objects.get(codename="book_high_priority"))
    return user


@pytest.fixture
def api(owner):
    """An API client signed in (by token) as `owner`."""
    return client_for(owner)


@pytest.fixture
def training_data(tmp_path, settings, monkeypatch):
    """Data and run folders for this test, in settings and in the environment (training children and
    worker processes read their settings from it). Returns the demo dataset's data.yaml."""
    for name, value in (("TRAINING_DATA_ROOTS", tmp_path / "data"), ("TRAINING_RUNS_DIR", tmp_path / "runs")):
        monkeypatch.setenv(name, str(value))
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    return make_dataset(tmp_path / "data" / "demo", images=32, size=64)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis for this test alone: stopping the shared one would break every other worker and test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def short_slots(settings, monkeypatch):
    """One-minute slots, 15 s of preemption notice, 6 s of minimum runtime: preemption stories with
    real workers (which read the environment) take minutes, not hours."""
    values = dict(SLOT_MINUTES=1, PREEMPTION_NOTICE_MINUTES=0.25, PREEMPT_MIN_RUNTIME_MINUTES=0.1)
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
        setattr(settings, name, value)


@pytest.fixture
def defects(team):
    """The team's registered model "defects" with versions 1 and 2, as rows only (no weights in a
    store): enough for what reads only the registry (booking checks, pages, forms)."""
    model = Model.objects.create(team=team, name="defects")
    for version in (1, 2):
        ModelVersion.objects.create(
            model=model, version=version, imgsz=64, class_names=["square", "bar"], size=1, sha256=f"{version:064d}"
        )
    return model


# Real YOLO weights for the serving and routing tests, made once per session by a short training run
# on the synthetic dataset (no downloads).
TRAIN = """
import sys
from ultralytics import YOLO
model = YOLO(sys.argv[1])
model.train(data=sys.argv[2], epochs=1, imgsz=64, batch=4, device="cpu", workers=0, plots=False, amp=False,
            project=sys.argv[3], name="train", exist_ok=True, verbose=False, val=True)
"""


class Weights:
    """`best` and `last` of one training run (best is inference-only, last keeps its optimizer), and
    `variant(i)`: the same network saved with different bytes, so each is a model of its own."""

    def __init__(self, folder):
        self.folder = folder
        self.best = folder / "train" / "weights" / "best.pt"
        self.last = folder / "train" / "weights" / "last.pt"

    def variant(self, index):
        import torch

        target = self.folder / f"variant-{index}.pt"
        if not target.exists():
            checkpoint = torch.load(self.best, map_location="cpu", weights_only=False)
            checkpoint["date"] = f"variant {index}"
            torch.save(checkpoint, target)
        return target


def _train(folder, config):
    folder.mkdir(parents=True, exist_ok=True)
    data = make_dataset(folder / "data", images=16, size=64)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(folder / "ultralytics")}
    subprocess.run(
        [sys.executable, "-c", TRAIN, config, str(data), str(folder)],
        check=True, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600,
    )
    return Weights(folder)


@pytest.fixture(scope="session")
def yolo_weights(tmp_path_factory):
    """yolov8n trained for one epoch at 64 px: real weights, about 6 MB."""
    return _train(tmp_path_factory.mktemp("yolo-weights"), "yolov8n.yaml")
