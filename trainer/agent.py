"""The node agent: lives in a node's Celery worker, owns the training processes on that node.

Every second it heartbeats (every HEARTBEAT_SECONDS) and reconciles this node against the database,
level-triggered: a job whose booking has started and whose devices are all free is started; a job
past its booking (plus any overrun grace), cancelled or asked to stop is stopped. The database is the
source of truth, so a lost message, a restarted worker or a restarted broker changes nothing: the
next pass sees the same bookings and does what is still missing. The start_job and stop_job tasks on
the node's queue only make that happen sooner.
"""

import logging
import os
import threading
import time

from celery import signals
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from reservations import policy
from reservations.models import Node, Reservation
from reservations.services import gpu_readings_record, node_register

from . import metrics, services
from .hardware import detect
from .telemetry import publish, start_exporter
from .models import TrainingJob
from .process import command_line_has, spawn, stop, terminate_orphan
from .supervisors import node_supervisors

log = logging.getLogger(__name__)
Status = TrainingJob.Status


class NodeAgent:
    def __init__(self, hostname, hardware):
        self.hostname = hostname
        self.hardware = hardware
        self.children = {}  # job id -> Popen
        self.killed = set()  # job ids killed after the stop grace
        self.seen_running = set()  # job ids whose start latency is recorded
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_heartbeat = 0.0
        self.thread = threading.Thread(target=self._loop, name=f"node-agent-{hostname}", daemon=True)
        # What else this node runs on its booked devices (serving replicas: node_supervisors),
        # supervised from the same loop.
        self.supervisors = [supervisor(self) for supervisor in node_supervisors]

    # --- lifecycle -------------------------------------------------------------------------
    def start(self):
        self.node = node_register(hostname=self.hostname, devices=self.hardware.devices())
        self._reap_orphans()
        for supervisor in self.supervisors:
            supervisor.start()
        start_exporter(settings.NODE_METRICS_PORT, settings.NODE_METRICS_ADDR)
        self.thread.start()
        log.info("node agent for %s started with %d device(s)", self.hostname, self.node.gpus.count())

    def shutdown(self):
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=10)
        for supervisor in self.supervisors:
            supervisor.shutdown()

    def nudge(self):
        """Reconcile now rather than within the second (a start_job or stop_job task arrived)."""
        self.wake.set()

    def _loop(self):
        # Spawning from this one long-lived thread matters: PDEATHSIG fires when the spawning
        # thread exits, and this thread lives as long as the worker.
        while not self.stopping.is_set():
            try:
                close_old_connections()
                self._heartbeat()
                self.reconcile()
                for supervisor in self.supervisors:
                    supervisor.reconcile()
            except Exception:
                log.exception("node agent pass failed; retrying")
                connection.close()
            self.wake.wait(1.0)
            self.wake.clear()

    def _heartbeat(self):
        if time.monotonic() - self.last_heartbeat < settings.HEARTBEAT_SECONDS:
            return
        Node.objects.filter(pk=self.node.pk).update(online=True, last_heartbeat=timezone.now())
        self.last_heartbeat = time.monotonic()
        self._report_telemetry()

    def _report_telemetry(self):
        """The GPUs' readings, to the metrics port and to the health check. A failed reading or
        health check is logged and the pass goes on: the heartbeat itself has been written."""
        try:
            readings = self.hardware.telemetry()
        except Exception:
            log.exception("reading the devices' telemetry failed")
            return
        publish(self.hostname, readings)
        try:
            for gpu_id, health in gpu_readings_record(node=self.node, readings=readings).items():
                log.warning("GPU %s is now %s", gpu_id, health)
        except Exception:
            log.exception("recording the GPU readings failed")
            connection.close()

    def _reap_orphans(self):
        """A job this node was running when its worker died: make sure no old process still trains
        on the devices (it may have outlived a missed PDEATHSIG), then let reconcile resume it."""
        for job in TrainingJob.objects.filter(node=self.node, status__in=TrainingJob.LIVE):
            if job.pid and command_line_has(job.pid, "run_training_job", str(job.pk)):
                terminate_orphan(job.pid, settings.STOP_GRACE_SECONDS)
            TrainingJob.objects.filter(pk=job.pk, status__in=TrainingJob.LIVE).update(
                status=Status.INTERRUPTED, reason="Its worker restarted; resuming from the checkpoint.", pid=None,
                ended_at=timezone.now(),
            )

    # --- reconcile -------------------------------------------------------------------------
    def reconcile(self, now=None):
        now = now or timezone.now()
        jobs = (
            TrainingJob.objects.filter(reservation__allocations__gpu__node=self.node)
            .exclude(status__in=TrainingJob.FINISHED)
            .select_related("reservation")
            .distinct()
        )
        for job in jobs:
            reservation = job.reservation
            running = job.pk in self.children
            if running and self._should_stop(job, reservation, now):
                self.request_stop(job.pk, self._stop_reason(job, reservation, now))
            elif not running and job.status in TrainingJob.WAITING and policy.job_window_open(reservation, now):
                self._start(job)
            elif running and job.status == Status.RUNNING and job.pk not in self.seen_running:
                self.seen_running.add(job.pk)
                metrics.observe_start(job, reservation)

    def _should_stop(self, job, reservation, now):
        if job.status == Status.STOPPING:
            return True
        if reservation.status in (Reservation.Status.CANCELLED, Reservation.Status.PREEMPTED):
            return True
        return now >= reservation.end and now >= services.stop_deadline(reservation, job)

    def _stop_reason(self, job, reservation, now):
        if job.status == Status.STOPPING:
            return job.reason
        if reservation.preempted_by_id is not None:
            return f"Preempted by reservation #{reservation.preempted_by_id}: stopping with a resumable checkpoint."
        if reservation.status != Reservation.Status.ACTIVE and now < reservation.end:
            return f"The booking was {reservation.status}."
        return "The booking ended."

    def _start(self, job):
        _, devices = services.job_placement(job)
        if devices is None:
            TrainingJob.objects.filter(pk=job.pk).update(
                status=Status.FAILED, reason="Training across several nodes is not supported.", ended_at=timezone.now()
            )
            return
        if not self._devices_free(job):
            return  # gang readiness: the previous job on one of its GPUs has not exited yet
        if not services.job_resolve_previous(job=job):
            return  # "previous": an earlier occurrence's job is still live (it may still be saving)
        if not services.job_ready_to_start(job):
            return  # the job it resumes is still saving its last checkpoint
        if not services.job_claim_start(job_id=job.pk, node=self.node, devices=devices):
            return
        # Spawned from the agent's own long-lived thread: PDEATHSIG follows the spawning thread.
        process, log_path = spawn(job, devices, die_with_parent=True)
        TrainingJob.objects.filter(pk=job.pk).update(
            pid=process.pid, log_path=str(log_path), run_dir=str(log_path.parent), spawned_at=timezone.now()
        )
        with self.lock:
            self.children[job.pk] = process
        threading.Thread(target=self._wait, args=(job.pk, process), daemon=True).start()
        log.info("job %s started as pid %s on %s", job.pk, process.pid, devices or "cpu")

    def _devices_free(self, job):
        gpu_ids = {a.gpu_id for a in job.reservation.allocation_list}
        busy = self.busy_gpu_ids(except_job=job.pk)
        for supervisor in self.supervisors:
            busy |= supervisor.busy_gpu_ids()
        return not (gpu_ids & busy)

    def busy_gpu_ids(self, except_job=None):
        """The GPUs this node's training processes hold (gang readiness for whatever starts next)."""
        with self.lock:
            others = [j for j in self.children if j != except_job]
        if not others:
            return set()
        return set(
            TrainingJob.objects.filter(pk__in=others).values_list("reservation__allocations__gpu_id", flat=True)
        )

    def request_stop(self, job_id, reason):
        """Ask the job to stop (checkpoint), and kill it if it has not exited within the grace."""
        services.job_request_stop(job_id=job_id, reason=reason)
        with self.lock:
            process = self.children.get(job_id)
            if process is None or getattr(process, "stop_sent", False):
                return
            process.stop_sent = True
            process.stop_asked = time.monotonic()
        threading.Thread(target=self._stop, args=(job_id, process), daemon=True).start()

    def _stop(self, job_id, process):
        def mark_killed():
            # Before the kill, so the exit waiter cannot miss that it was killed.
            log.warning("job %s did not stop within %ss; killing it", job_id, settings.STOP_GRACE_SECONDS)
            with self.lock:
                self.killed.add(job_id)

        if stop(process, settings.STOP_GRACE_SECONDS, before_kill=mark_killed):
            metrics.STOP_SECONDS.labels(phase="checkpoint").observe(time.monotonic() - process.stop_asked)
        else:
            metrics.STOP_KILLS.inc()

    def _wait(self, job_id, process):
        returncode = process.wait()
        with self.lock:
            self.children.pop(job_id, None)
            killed = job_id in self.killed
            self.killed.discard(job_id)
            self.seen_running.discard(job_id)
        try:
            close_old_connections()
            job = services.job_exited(job_id=job_id, returncode=returncode, killed=killed)
            if job is not None:
                job.refresh_from_db()
                if job.status == Status.COMPLETED:
                    services.release_after_finish(reservation_id=job.reservation_id, job_id=job_id)
        finally:
            connection.close()
        if hasattr(process, "stop_asked"):
            metrics.STOP_SECONDS.labels(phase="gpu_free").observe(time.monotonic() - process.stop_asked)
        self.nudge()  # its devices are free: a waiting gang may start now


AGENT = None


def start_agent(hostname, hardware):
    global AGENT
    AGENT = NodeAgent(hostname, hardware)
    AGENT.start()
    return AGENT


def reconcile_soon():
    if AGENT is not None:
        AGENT.nudge()


# The agent lives in a GPU node's worker: one started with NODE_AGENT_HOSTNAME registers the node's
# devices (NVML, or CPU devices) and runs the agent. Celery imports this module with the worker's
# tasks (trainer.tasks), before the worker is ready.
@signals.worker_ready.connect
def start_node_agent(sender, **kwargs):
    hostname = os.environ.get("NODE_AGENT_HOSTNAME")
    if hostname:
        start_agent(hostname, detect())


@signals.worker_shutting_down.connect
def stop_node_agent(sender, **kwargs):
    if AGENT is not None:
        AGENT.shutdown()

