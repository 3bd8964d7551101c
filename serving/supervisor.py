"""The replicas of serving bookings on one node: started, watched and drained by the node agent.

The node's agent (trainer.agent) calls `reconcile()` from its loop every second, as it reconciles
training jobs, level-triggered from the database: a serving booking whose slot has begun gets one
replica process per booked device of this node; a replica whose booking ended, was cancelled or was
preempted is drained (SIGTERM: it finishes the requests in flight and exits, killed only after
REPLICA_DRAIN_SECONDS more); a replica that dies is started again (at most RESTARTS times per
device). Each pass also asks every replica for its status (signed, serving.signing; all at once, so a
slow replica costs the pass one timeout at most) and records what it holds, for the router.
"""

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from reservations import policy
from reservations.models import GPU
from trainer.process import child_environment, command_line_has, spawn_process, stop, terminate_orphan

from . import metrics, services
from .models import Replica, Serving
from .signing import ReplicaClient

log = logging.getLogger(__name__)
Status = Serving.Status
State = Replica.State

# Failures of a booking's replica on one device within RESTART_WINDOW before the supervisor gives up
# on that device (a crash days ago does not count against a week-long booking).
RESTARTS = 3
RESTART_WINDOW = timedelta(minutes=10)
RESTART_BACKOFF = timedelta(seconds=5)
STATUS_TIMEOUT = 0.5
STATUS_THREADS = 8


def replica_dir(replica_id):
    return Path(settings.VAR_DIR) / "serving" / f"replica-{replica_id}"


class ReplicaSupervisor:
    def __init__(self, agent):
        self.agent = agent
        self.children = {}  # replica id -> Popen, with .serving_id, .gpu_id, .replica, .drain_asked
        self.lock = threading.Lock()
        self.polls = ThreadPoolExecutor(max_workers=STATUS_THREADS, thread_name_prefix="replica-status")

    # --- lifecycle -------------------------------------------------------------------------
    def start(self):
        """A replica this node ran when its worker died may still be serving with no supervisor:
        drain it, and let reconcile start a fresh one while its booking lasts."""
        for replica in Replica.objects.filter(node=self.agent.node, state__in=Replica.LIVE):
            config = str(replica_dir(replica.pk) / "config.json")
            if replica.pid and command_line_has(replica.pid, "serving.replica", config):
                terminate_orphan(replica.pid, settings.REPLICA_DRAIN_SECONDS + 5)
            services.replica_exited(
                replica_id=replica.pk, returncode=0, drained=True,
                reason="Its node's worker restarted; a new replica takes over while the booking lasts.",
            )

    def shutdown(self):
        """The worker is going: drain every replica (the next worker starts fresh ones)."""
        with self.lock:
            children = list(self.children.values())
        threads = [self._drain_child(child, "The node's worker is shutting down.") for child in children]
        for thread in threads:
            if thread is not None:
                thread.join(timeout=settings.REPLICA_DRAIN_SECONDS + 10)
        self.polls.shutdown(wait=False)

    def busy_gpu_ids(self):
        with self.lock:
            return {child.gpu_id for child in self.children.values()}

    # --- reconcile -------------------------------------------------------------------------
    def reconcile(self, now=None):
        now = now or timezone.now()
        servings = (
            Serving.objects.filter(reservation__allocations__gpu__node=self.agent.node)
            .exclude(status__in=Serving.FINISHED)
            .select_related("reservation")
            .distinct()
        )
        for serving in servings:
            # One serving's failure (a database error, a full port range) must not starve the others
            # nor the status polls: it is logged and tried again at the next pass.
            try:
                self._reconcile_one(serving, now)
            except Exception:
                log.exception("supervising serving %s failed; retrying at the next pass", serving.pk)
        self._poll()

    def _reconcile_one(self, serving, now):
        reservation = serving.reservation
        reason = self._drain_reason(serving, reservation, now)
        if reason is not None:
            self._drain(serving, reason)
        elif policy.job_window_open(reservation, now):
            self._keep_up(serving, reservation, now)

    def _drain_reason(self, serving, reservation, now):
        if serving.status == Status.DRAINING:
            return serving.reason or "Draining."
        if reservation.status not in policy.LIVE_STATUSES:
            return f"The booking was {reservation.status}."
        # A preempted booking ends at its preemptor's start, but its replicas serve on until the
        # reclaim time its owner was told (a minimum runtime may put it later): the reclaim ends the
        # booking, and drains them, then.
        if now >= reservation.end and reservation.preempted_by_id is None:
            return "The booking ended."
        return None

    def _drain(self, serving, reason):
        services.serving_drain(serving_id=serving.pk, reason=reason)
        with self.lock:
            children = [c for c in self.children.values() if c.serving_id == serving.pk]
        for child in children:
            self._drain_child(child, reason)
        if not children:
            services.serving_settle(serving_id=serving.pk, reason=f"Stopped: {reason}")

    def _keep_up(self, serving, reservation, now):
        if serving.status == Status.QUEUED:
            serving = services.serving_begin(serving_id=serving.pk, now=now)
            if serving is None:
                return
        gpus = list(GPU.objects.filter(node=self.agent.node, allocations__reservation=reservation).distinct())
        with self.lock:
            mine = {child.gpu_id for child in self.children.values() if child.serving_id == serving.pk}
        if all(gpu.pk in mine for gpu in gpus):
            return  # the steady state: a replica of this booking runs on each of its devices here
        # Not free yet: a training job still stopping there, or any replica still live on it (this
        # booking's own, or the one before it on that GPU, draining).
        busy = self.agent.busy_gpu_ids() | self.busy_gpu_ids()
        busy |= set(Replica.objects.filter(gpu__in=gpus, state__in=Replica.LIVE).values_list("gpu_id", flat=True))
        gave_up = 0
        for gpu in gpus:
            if gpu.pk in busy:
                continue
            failed = list(
                Replica.objects.filter(serving=serving, gpu=gpu, state=State.FAILED, ended_at__gte=now - RESTART_WINDOW)
                .order_by("-ended_at").values_list("ended_at", flat=True)
            )
            if len(failed) >= RESTARTS:
                gave_up += 1
                continue
            if failed and now - failed[0] < RESTART_BACKOFF:
                continue
            self._start(serving, gpu)
        # Failed only when every device of the booking (on every node) has given up: another node's
        # replicas may still serve it.
        if gave_up and gave_up == reservation.allocations.count() and not Replica.objects.filter(
            serving=serving, state__in=Replica.LIVE
        ).exists():
            Serving.objects.filter(pk=serving.pk).exclude(status__in=Serving.FINISHED).update(
                status=Status.FAILED, ended_at=now,
                reason=f"Its replicas failed {RESTARTS} times within {RESTART_WINDOW} on each device; see their logs.",
            )

    def _start(self, serving, gpu):
        port = _free_port(self.agent.node)
        if port is None:
            log.error("no free port in REPLICA_PORTS for serving %s on %s", serving.pk, gpu)
            return
        token = secrets.token_hex(32)
        cpu = gpu.model == "cpu"
        replica = services.replica_create(
            serving=serving, gpu=gpu, node=self.agent.node, address=f"{settings.REPLICA_ADDR}:{port}",
            token=token, device="cpu" if cpu else f"cuda:{gpu.index}",
        )
        folder = replica_dir(replica.pk)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.json"
        spec = serving.spec
        body = {
            "replica": replica.pk, "bind": settings.REPLICA_ADDR, "port": port, "token": token,
            # The child sees only its device (CUDA_VISIBLE_DEVICES), as cuda:0.
            "device": "cpu" if cpu else "cuda:0",
            "memory_budget": replica.memory_budget, "max_batch": spec.get("max_batch", 8),
            "max_delay_ms": spec.get("max_delay_ms", 10), "drain_seconds": settings.REPLICA_DRAIN_SECONDS,
            "metrics_token": settings.METRICS_BEARER_TOKEN, "models": serving.resolved,
        }
        # The token is a secret: the file is the owner's alone from its first byte.
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(body, handle)
        env = child_environment([] if cpu else [gpu.index])
        # Spawned from the agent's long-lived thread: PDEATHSIG follows the spawning thread.
        process = spawn_process(
            [sys.executable, "-m", "serving.replica", str(config)], env, folder / "replica.log", die_with_parent=True
        )
        process.serving_id, process.gpu_id, process.replica = serving.pk, gpu.pk, replica
        process.drain_asked = None  # when the drain was asked (monotonic)
        process.ready = process.gave_up = False
        process.started = time.monotonic()
        services.replica_spawned(replica_id=replica.pk, pid=process.pid, log_path=folder / "replica.log")
        with self.lock:
            self.children[replica.pk] = process
        threading.Thread(target=self._wait, args=(replica.pk, process), daemon=True).start()
        log.info("replica %s of serving %s started as pid %s on %s port %s", replica.pk, serving.pk, process.pid, gpu, port)

    def _drain_child(self, child, reason):
        """SIGTERM once: the replica finishes its requests and exits; killed after the drain time."""
        with self.lock:
            if child.drain_asked is not None:
                return None
            child.drain_asked = time.monotonic()
        services.replica_draining(replica_id=child.replica.pk, reason=reason)
        thread = threading.Thread(
            target=stop, args=(child, settings.REPLICA_DRAIN_SECONDS + 5), daemon=True
        )
        thread.start()
        return thread

    def _wait(self, replica_id, process):
        returncode = process.wait()
        with self.lock:
            self.children.pop(replica_id, None)
        drained = process.drain_asked is not None
        metrics.EXITS.labels(outcome="drained" if drained else "failed").inc()
        try:
            close_old_connections()
            services.replica_exited(replica_id=replica_id, returncode=returncode, drained=drained)
            if drained:
                services.serving_settle(serving_id=process.serving_id, reason="Drained and stopped.")
        finally:
            connection.close()
        self.agent.nudge()

    # --- status ------------------------------------------------------------------------------
    def _poll(self):
        with self.lock:
            children = list(self.children.items())
        statuses = self.polls.map(lambda item: _status(item[1].replica), children)
        for (replica_id, child), status in zip(children, statuses):
            up = status is not None and status.get("state") in ("ready", "draining")
            if not up:  # not answering yet, or still loading its preloaded models
                if not (child.drain_asked or child.ready or child.gave_up) and (
                    time.monotonic() - child.started > settings.REPLICA_START_SECONDS
                ):
                    what = "was still loading its models" if status is not None else "did not answer"
                    log.error("replica %s %s after %ss; stopping it", replica_id, what, settings.REPLICA_START_SECONDS)
                    child.gave_up = True
                    services.replica_exited(
                        replica_id=replica_id, returncode=None, drained=False,
                        reason=f"It {what} after REPLICA_START_SECONDS ({settings.REPLICA_START_SECONDS} s).",
                    )
                    threading.Thread(target=stop, args=(child, 5), daemon=True).start()
                continue
            resident = [
                {key: model.get(key) for key in ("name", "version", "sha256", "bytes", "pinned")}
                for model in status.get("models", []) if model.get("resident")
            ]
            if not child.ready:
                child.ready = True
                if services.replica_ready(replica_id=replica_id, resident=resident):
                    metrics.START_SECONDS.observe(time.monotonic() - child.started)
            else:
                services.replica_resident(replica_id=replica_id, resident=resident)


def _status(replica):
    """The replica's own account of itself (GET /v1/status, signed), or None when it does not answer."""
    client = ReplicaClient(replica.address, replica.token, timeout=STATUS_TIMEOUT)
    try:
        response = client.get("/v1/status")
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    finally:
        client.close()


def _free_port(node):
    """A port of REPLICA_PORTS that no live replica of this node holds and that nothing listens on."""
    taken = {
        int(address.rsplit(":", 1)[1])
        for address in Replica.objects.filter(node=node, state__in=Replica.LIVE).values_list("address", flat=True)
    }
    for port in settings.REPLICA_PORTS:
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((settings.REPLICA_ADDR, port))
            except OSError:
                continue
        return port
    return None
