"""Writes for serving bookings and their replicas. The booking flows reach the first few through
serving.hooks; the node's replica supervisor (serving.supervisor) calls the rest.

Lock order (reservations.services.locks): serving rows come after reservations and jobs, and are
never locked: each write is a compare-and-set on a status, like the training jobs' writes."""

import requests
from django.conf import settings
from django.utils import timezone

from reservations.errors import BookingError

from .models import Model, Replica, Serving
from .selectors import replica_config_models, resolve_models
from .signing import ReplicaClient
from .spec import parse_ref

Status = Serving.Status
State = Replica.State


def serving_spec_check(*, user, team, spec):
    """Every model the spec names is in the team's registry now (a latest version is picked again
    at slot start)."""
    resolve_models(team, spec["models"])
    return spec


def serving_create(*, reservation, spec, now):
    """Inside the booking's transaction: the serving waits (queued) for its slot. The models it names
    are locked and looked up again here (4th in the lock order, reservations.services.locks): a
    deletion that won the race is a clear 400 now, and one that comes later sees this booking."""
    names = sorted({parse_ref(ref)[0] for ref in spec["models"]})
    list(Model.objects.select_for_update().filter(team=reservation.team, name__in=names).order_by("pk"))
    resolve_models(reservation.team, spec["models"])
    Serving.objects.create(
        reservation=reservation, spec=spec, created=now, reason="Booked; its replicas start at the slot start."
    )
    return []


def serving_replace(*, reservation, spec):
    """A booking not begun serves `spec` from now on (a series change): its waiting serving takes the
    new spec (its models locked and checked as when booked), or is made or dropped."""
    serving = Serving.objects.filter(reservation=reservation).first()
    if serving is None:
        if spec is not None:
            serving_create(reservation=reservation, spec=spec, now=timezone.now())
        return
    if serving.status != Status.QUEUED:
        return
    if spec is None:
        serving.delete()
        return
    names = sorted({parse_ref(ref)[0] for ref in spec["models"]})
    list(Model.objects.select_for_update().filter(team=reservation.team, name__in=names).order_by("pk"))
    resolve_models(reservation.team, spec["models"])
    Serving.objects.filter(pk=serving.pk, status=Status.QUEUED).update(spec=spec)


def serving_stop_for_booking(*, reservation, reason):
    """The booking ends now (cancelled, preempted): its serving ends (_end_servings)."""
    _end_servings(Serving.objects.filter(reservation=reservation), reason)


def _end_servings(servings, reason):
    """A serving still waiting stops; a live one drains (its node's supervisor stops the replicas
    gracefully within the second). Compare-and-set on the status, waiting ones first: one that
    starts between the two updates is drained by the second."""
    servings.filter(status=Status.QUEUED).update(status=Status.STOPPED, reason=reason, ended_at=timezone.now())
    servings.filter(status__in=[Status.STARTING, Status.SERVING]).update(status=Status.DRAINING, reason=reason)


def serving_begin(*, serving_id, now=None):
    """At slot start: resolve the models ("people" is its latest version now) and move to starting.
    Returns the serving, or None when it was not queued (a second call) or a model is gone (then it
    failed, saying which). Only that means it cannot serve: any other error (the database away for
    a moment) leaves it queued and propagates, and the supervisor's next pass tries again."""
    serving = Serving.objects.select_related("reservation__team").get(pk=serving_id)
    if serving.status != Status.QUEUED:
        return serving if serving.status in (Status.STARTING, Status.SERVING) else None
    try:
        versions = resolve_models(serving.reservation.team, serving.spec["models"])
    except BookingError as exc:  # a model or version deleted since the booking
        Serving.objects.filter(pk=serving_id, status=Status.QUEUED).update(
            status=Status.FAILED, reason=f"Cannot serve: {exc}", ended_at=now or timezone.now()
        )
        return None
    resolved = replica_config_models(versions, serving.spec.get("preload", []), serving.spec["models"])
    claimed = Serving.objects.filter(pk=serving_id, status=Status.QUEUED).update(
        status=Status.STARTING, resolved=resolved, started_at=now or timezone.now(),
        reason="Starting its replicas on the booked devices.",
    )
    if not claimed:
        return None
    serving.refresh_from_db()
    return serving


def memory_budget(serving, gpu):
    """Bytes a replica's models may take: the booking's memory_budget_mb, else a share of the GPU's
    memory (REPLICA_GPU_BUDGET_PCT), or REPLICA_CPU_BUDGET_MB on a CPU device."""
    asked = serving.spec.get("memory_budget_mb")
    if asked:
        return asked << 20
    if gpu.model == "cpu" or not gpu.memory_mb:
        return settings.REPLICA_CPU_BUDGET_MB << 20
    return int((gpu.memory_mb << 20) * settings.REPLICA_GPU_BUDGET_PCT / 100)


def replica_create(*, serving, gpu, node, address, token, device):
    return Replica.objects.create(
        serving=serving, gpu=gpu, node=node, device=device, address=address, token=token,
        memory_budget=memory_budget(serving, gpu), reason="Starting.",
    )


def replica_spawned(*, replica_id, pid, log_path):
    Replica.objects.filter(pk=replica_id).update(pid=pid, log_path=str(log_path), spawned_at=timezone.now())


def replica_ready(*, replica_id, resident):
    """The replica answered: it is ready, and so is its serving."""
    now = timezone.now()
    changed = Replica.objects.filter(pk=replica_id, state=State.STARTING).update(
        state=State.READY, ready_at=now, resident=resident, reason="Serving."
    )
    if changed:
        serving_id = Replica.objects.filter(pk=replica_id).values_list("serving_id", flat=True).first()
        Serving.objects.filter(pk=serving_id, status=Status.STARTING).update(status=Status.SERVING, reason="Serving.")
    return changed == 1


def replica_resident(*, replica_id, resident):
    """What the replica says it holds, for the router (written only when it changed)."""
    Replica.objects.filter(pk=replica_id).exclude(resident=resident).update(resident=resident)


def replica_draining(*, replica_id, reason):
    return Replica.objects.filter(pk=replica_id, state__in=[State.STARTING, State.READY]).update(
        state=State.DRAINING, reason=reason
    )


def replica_exited(*, replica_id, returncode, drained, reason=""):
    """Its process is gone: stopped when it was drained (saying why it was), else failed."""
    if drained:
        asked = Replica.objects.filter(pk=replica_id).values_list("reason", flat=True).first() or ""
        done = "Drained and stopped." if returncode == 0 else f"Stopped (exit code {returncode} after the drain)."
        state, why = State.STOPPED, reason or f"{done} Asked: {asked}"
    else:
        state, why = State.FAILED, reason or f"The replica exited unexpectedly (code {returncode})."
    Replica.objects.filter(pk=replica_id).exclude(state__in=Replica.ENDED).update(
        state=state, reason=why, ended_at=timezone.now(), pid=None
    )


def replicas_node_lost(*, node_ids, now):
    """Replicas on nodes that stopped heartbeating are failed; servings draining there are stopped.
    Returns how many replicas were failed."""
    lost = Replica.objects.filter(node_id__in=node_ids, state__in=Replica.LIVE)
    servings = set(lost.values_list("serving_id", flat=True))
    failed = lost.update(
        state=State.FAILED, reason="Its node stopped sending heartbeats.", ended_at=now, pid=None
    )
    for serving_id in servings:
        serving_settle(serving_id=serving_id, reason="Stopped: its node went silent while it drained.")
    return failed


def serving_settle(*, serving_id, reason):
    """A draining serving whose replicas have all ended is stopped."""
    if Replica.objects.filter(serving_id=serving_id, state__in=Replica.LIVE).exists():
        return False
    return Serving.objects.filter(pk=serving_id, status=Status.DRAINING).update(
        status=Status.STOPPED, reason=reason, ended_at=timezone.now()
    ) == 1


def serving_drain(*, serving_id, reason):
    """The slot is over (or the booking ended): drain, then stop (_end_servings)."""
    _end_servings(Serving.objects.filter(pk=serving_id), reason)


class ReplicaUnavailable(Exception):
    """The replica cannot take a request: it is not live, or it does not answer."""


def replica_forward(*, replica, method, path, body=b"", content_type=None, timeout=60):
    """Send one signed request to a live replica on behalf of a user the caller has checked. Returns
    (status, content, content type) as the replica answered."""
    if replica.state not in (State.READY, State.DRAINING):
        raise ReplicaUnavailable(f"Replica {replica.pk} is {replica.get_state_display().lower()}: it takes no requests.")
    client = ReplicaClient(replica.address, replica.token, timeout=timeout)
    try:
        response = client.request(method, path, body=body, content_type=content_type)
    except requests.RequestException as exc:
        raise ReplicaUnavailable(f"Replica {replica.pk} at {replica.address} did not answer: {type(exc).__name__}.") from None
    finally:
        client.close()
    return response.status_code, response.content, response.headers.get("Content-Type", "application/json")
