"""GPU health from the readings node agents send with their heartbeats.

Alerts come in episodes: an episode opens when a reading crosses its threshold (temperature at or
over GPU_TEMP_ALERT_CELSIUS, memory use at or over GPU_MEMORY_ALERT_PCT, a new ECC or XID error) and
ends when readings are GPU_ALERT_CLEAR_MARGIN under it (never on a reading the device could not
give), so a GPU that stays hot for an hour alerts once, not at every
heartbeat. Each opening tells the owner of the booking on the GPU now and every admin (staff), by
notice, e-mail and webhook, and is audited on "gpu:<id>".

A new ECC or XID error, or a temperature at or over GPU_TEMP_FAIL_CELSIUS, fails the health check:
the GPU is taken out of booking (healthy=False, which every free-window search and pick filters on),
the owners of its bookings still ahead are told with the nearest free window of the same size on
healthy GPUs. A GPU failed for heat, or one its node could not reach, comes back after
GPU_RECOVERY_READINGS clean readings in a row. An ECC or XID error needs a GPU reset: its episode
stays open (and the GPU out) until the ECC count is reset (then the clean readings count) or an
admin returns the GPU to service (gpu_return_to_service).
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from .. import selectors
from ..models import GPU, AuditEntry, GpuAlert, GpuReading, Notice
from ..utc_text import utc_window
from .audit import audit_record
from .locks import lock_gpus, service_transaction
from .notices import notice_send

READING_FIELDS = (
    "temperature_c", "memory_used_mb", "memory_free_mb", "utilization_pct", "power_w", "ecc_errors", "xid_errors"
)
# Error episodes end with the health check, not with the reading that opened them.
ERROR_KINDS = (GpuAlert.Kind.ECC, GpuAlert.Kind.XID)


@dataclass
class _Crossing:
    kind: str
    value: float
    message: str


def gpu_readings_record(*, node, readings, now=None):
    """Store the latest reading of each of `node`'s GPUs (objects with `index` and READING_FIELDS,
    None for what a device cannot read), and act on what they say. Returns the GPUs whose health
    changed, as {gpu id: "unhealthy" | "healthy"}."""
    now = now or timezone.now()
    changed = {}
    outbox = []
    with service_transaction():
        # The node's GPUs in id order (2nd in locks.py's order): the health flag is what booking
        # picks read under these locks. Bookings are only read here, never locked, and nothing that
        # points at one is written here: a notice's row takes a key-share lock on its booking, which
        # would wait, holding the GPUs, on a move or cancel that holds the booking and waits for the
        # GPUs (a deadlock). The notices go out after commit, below.
        lock_gpus(node.gpus.values("id"))
        gpus = {g.index: g for g in GPU.objects.filter(node=node).select_related("node")}
        latest = {r.gpu_id: r for r in GpuReading.objects.filter(gpu__node=node)}
        open_alerts = {}
        for alert in GpuAlert.objects.filter(gpu__node=node, ended=None):
            open_alerts.setdefault(alert.gpu_id, {})[alert.kind] = alert
        for reading in readings:
            gpu = gpus.get(reading.index)
            if gpu is None:
                continue  # registered at the next start of the agent
            outcome = _record(gpu, reading, latest.get(gpu.pk), open_alerts.get(gpu.pk, {}), now, outbox)
            if outcome:
                changed[gpu.pk] = outcome
    _send(outbox)
    return changed


def _send(outbox):
    """Each notice in a short transaction of its own, with no GPU locked: one waiting on a booking
    that its owner is changing waits only for that change."""
    for notice in outbox:
        with service_transaction():
            notice_send(**notice)


def _record(gpu, reading, before, open_alerts, now, outbox):
    values = {name: getattr(reading, name, None) for name in READING_FIELDS}
    new_ecc = _new_errors(before.ecc_errors if before else None, values["ecc_errors"])
    new_xid = _new_errors(before.xid_errors if before else None, values["xid_errors"])
    # Only a GPU reset or a driver reload brings the volatile ECC count down (XID counts restart with
    # the agent, which says nothing about the GPU: an XID failure waits for an admin).
    ecc_reset = (
        before is not None and before.ecc_errors is not None and values["ecc_errors"] is not None
        and values["ecc_errors"] < before.ecc_errors
    )
    crossings = _crossings(gpu, values, new_ecc, new_xid)
    row = before or GpuReading(gpu=gpu)
    row.at = now
    for name, value in values.items():
        if value is None and name in ("ecc_errors", "xid_errors"):
            continue  # one failed read keeps the last count, so the next one is not all "new"
        setattr(row, name, value)

    for crossing in crossings:
        if crossing.kind not in open_alerts:
            _alert_open(gpu, crossing, values, now, outbox)
    for kind, alert in open_alerts.items():
        if kind not in ERROR_KINDS and _cleared(kind, values):
            _alert_end(gpu, alert, now)

    if ecc_reset and not new_ecc and GpuAlert.Kind.ECC in open_alerts:
        _alert_end(gpu, open_alerts.pop(GpuAlert.Kind.ECC), now, "its ECC count was reset (GPU reset or driver reload)")

    failures = _failures(gpu, values, new_ecc, new_xid, lost=getattr(reading, "lost", False))
    outcome = None
    if failures:
        row.clean_readings = 0
        if row.failed_since is None:
            row.failed_since, row.failed_reason = now, "; ".join(failures)
            _take_out(gpu, row.failed_reason, values, now, outbox)
            outcome = "unhealthy"
    elif row.failed_since is not None and any(kind in open_alerts for kind in ERROR_KINDS):
        # NVIDIA: an uncorrectable ECC error or a critical XID needs a GPU reset. Clean readings
        # say nothing until then (the count still shows the error): only a reset of the ECC count,
        # or an admin (gpu_return_to_service), ends the error episode that keeps it out.
        row.clean_readings = 0
    elif row.failed_since is not None:
        row.clean_readings += 1
        if row.clean_readings >= settings.GPU_RECOVERY_READINGS:
            _bring_back(gpu, row, open_alerts, values, now, outbox)
            row.failed_since, row.failed_reason, row.clean_readings = None, "", 0
            outcome = "healthy"
    if row.failed_since is not None and gpu.healthy:
        # node_register marks every device it finds healthy when a worker starts: a GPU the health
        # check has out stays out until its clean readings bring it back.
        GPU.objects.filter(pk=gpu.pk).update(healthy=False)
    row.save()
    return outcome


def _new_errors(before, now):
    """Errors since the previous reading. The first count known is a baseline, not news (a GPU's
    volatile count from before this database knew it, e.g. right after migrating). A count that went
    down was reset (the driver reloaded, or the agent restarted and counts its XID events afresh):
    all of it is new."""
    if now is None or before is None:
        return 0
    if now < before:
        return now
    return now - before


def _crossings(gpu, values, new_ecc, new_xid):
    found = []
    temperature = values["temperature_c"]
    if temperature is not None and temperature >= settings.GPU_TEMP_ALERT_CELSIUS:
        found.append(_Crossing(
            GpuAlert.Kind.TEMPERATURE, temperature,
            f"{gpu.name} is at {temperature:g} °C (alert at {settings.GPU_TEMP_ALERT_CELSIUS:g} °C).",
        ))
    used, free = values["memory_used_mb"], values["memory_free_mb"]
    if used is not None and free is not None and used + free > 0:
        percent = 100 * used / (used + free)
        if percent >= settings.GPU_MEMORY_ALERT_PCT:
            found.append(_Crossing(
                GpuAlert.Kind.MEMORY, round(percent, 1),
                f"{gpu.name} has {percent:.1f}% of its memory in use (alert at {settings.GPU_MEMORY_ALERT_PCT:g}%).",
            ))
    if new_ecc:
        found.append(_Crossing(
            GpuAlert.Kind.ECC, values["ecc_errors"],
            f"{gpu.name} reported {new_ecc} new uncorrected ECC error(s) ({values['ecc_errors']} in all).",
        ))
    if new_xid:
        found.append(_Crossing(
            GpuAlert.Kind.XID, values["xid_errors"], f"{gpu.name} reported {new_xid} new critical XID error(s).",
        ))
    return found


def _cleared(kind, values):
    """Whether a temperature or memory episode is over: the reading is GPU_ALERT_CLEAR_MARGIN under
    its threshold, so a GPU hovering around it alerts once, not at every other heartbeat. A reading
    the device could not give says nothing: the episode goes on."""
    margin = settings.GPU_ALERT_CLEAR_MARGIN
    if kind == GpuAlert.Kind.TEMPERATURE:
        temperature = values["temperature_c"]
        return temperature is not None and temperature < settings.GPU_TEMP_ALERT_CELSIUS - margin
    used, free = values["memory_used_mb"], values["memory_free_mb"]
    if used is None or free is None or used + free <= 0:
        return False
    return 100 * used / (used + free) < settings.GPU_MEMORY_ALERT_PCT - margin


def _failures(gpu, values, new_ecc, new_xid, lost=False):
    failures = []
    if lost:
        failures.append("the node cannot reach it (fallen off the bus?)")
    if new_ecc:
        failures.append(f"{new_ecc} new uncorrected ECC error(s)")
    if new_xid:
        failures.append(f"{new_xid} new critical XID error(s)")
    temperature = values["temperature_c"]
    if temperature is not None and temperature >= settings.GPU_TEMP_FAIL_CELSIUS:
        failures.append(f"{temperature:g} °C, at or over the hard limit of {settings.GPU_TEMP_FAIL_CELSIUS:g} °C")
    return failures


def _admins():
    return list(get_user_model().objects.filter(is_staff=True, is_active=True).order_by("id"))


def _alert_open(gpu, crossing, values, now, outbox):
    GpuAlert.objects.create(gpu=gpu, kind=crossing.kind, started=now, value=crossing.value, message=crossing.message)
    audit_record(
        action=AuditEntry.Action.GPU_ALERT, target=f"gpu:{gpu.pk}", reason=crossing.message,
        after={"alert": crossing.kind, "reading": values},
    )
    data = {"gpu": gpu.pk, "gpu_name": gpu.name, "alert": crossing.kind, "value": crossing.value, "reading": values}
    told = set()
    now_on_it = [r for r in selectors.gpu_bookings_ahead(gpu_id=gpu.pk, now=now) if r.start <= now]
    for reservation in now_on_it:
        if reservation.user_id not in told:
            told.add(reservation.user_id)
            outbox.append(dict(
                user=reservation.user, kind=Notice.Kind.GPU_ALERT, reservation=reservation,
                message=f"{crossing.message} Your booking #{reservation.pk} is using it.",
                data=data | {"booking_url": f"/bookings/{reservation.pk}/"},
            ))
    for admin in _admins():
        if admin.pk not in told:
            outbox.append(dict(user=admin, kind=Notice.Kind.GPU_ALERT, message=crossing.message, data=data))


def _alert_end(gpu, alert, now, why="back under its threshold", actor=None):
    GpuAlert.objects.filter(pk=alert.pk).update(ended=now)
    audit_record(
        action=AuditEntry.Action.GPU_ALERT_END, target=f"gpu:{gpu.pk}", actor=actor,
        reason=f"{gpu.name}: {alert.get_kind_display().lower()} {why}.",
    )


def _take_out(gpu, reason, values, now, outbox):
    GPU.objects.filter(pk=gpu.pk).update(healthy=False)
    gpu.healthy = False  # the free-window search below must not offer it
    message = f"{gpu.name} failed its health check ({reason}) and takes no new bookings."
    audit_record(
        action=AuditEntry.Action.GPU_UNHEALTHY, target=f"gpu:{gpu.pk}", reason=message,
        before={"healthy": True}, after={"healthy": False, "reading": values},
    )
    told = set()
    for reservation in selectors.gpu_bookings_ahead(gpu_id=gpu.pk, now=now):
        told.add(reservation.user_id)
        suggestion = selectors.healthy_move_suggestion(reservation, now)
        url = f"/bookings/{reservation.pk}/"
        if suggestion:
            where = (
                f" The nearest free window of the same size on healthy GPUs: {', '.join(suggestion['gpu_names'])}"
                f" at {utc_window(suggestion['start'], suggestion['end'])}: move it there in"
                f" one click on its page, or with POST /api/v1/reservations/{reservation.pk}/move/."
            )
        else:
            where = " No free window of the same size on healthy GPUs was found within the booking horizon."
        outbox.append(dict(
            user=reservation.user, kind=Notice.Kind.GPU_UNHEALTHY, reservation=reservation,
            message=f"{message} Your booking #{reservation.pk} uses it.{where} See {url}",
            data={"gpu": gpu.pk, "gpu_name": gpu.name, "reason": reason, "suggestion": suggestion, "booking_url": url},
        ))
    for admin in _admins():
        if admin.pk not in told:
            outbox.append(dict(
                user=admin, kind=Notice.Kind.GPU_UNHEALTHY, message=message,
                data={"gpu": gpu.pk, "gpu_name": gpu.name, "reason": reason},
            ))


def _bring_back(gpu, row, open_alerts, values, now, outbox):
    GPU.objects.filter(pk=gpu.pk).update(healthy=True)
    for kind in ERROR_KINDS:
        if kind in open_alerts:
            _alert_end(gpu, open_alerts[kind], now)
    message = (
        f"{gpu.name} is back in service: {row.clean_readings} clean readings in a row since it failed"
        f" its health check ({row.failed_reason})."
    )
    audit_record(
        action=AuditEntry.Action.GPU_HEALTHY, target=f"gpu:{gpu.pk}", reason=message,
        before={"healthy": False}, after={"healthy": True, "reading": values},
    )
    for admin in _admins():
        outbox.append(dict(user=admin, kind=Notice.Kind.GPU_RECOVERED, message=message, data={"gpu": gpu.pk, "gpu_name": gpu.name}))



def gpu_return_to_service(*, gpu_id, actor, now=None):
    """An admin puts a GPU the health check took out back in service (after resetting it, say):
    its health failure and open ECC/XID episodes are cleared, audited with who did it. Returns
    False if the GPU was in service already."""
    now = now or timezone.now()
    outbox = []
    with service_transaction():
        if not lock_gpus([gpu_id]):
            return False
        gpu = GPU.objects.select_related("node").get(pk=gpu_id)
        row = GpuReading.objects.filter(gpu=gpu).first()
        if gpu.healthy and (row is None or row.failed_since is None):
            return False
        for alert in GpuAlert.objects.filter(gpu=gpu, ended=None, kind__in=ERROR_KINDS):
            _alert_end(gpu, alert, now, f"cleared by {actor.get_username()}", actor=actor)
        GPU.objects.filter(pk=gpu.pk).update(healthy=True)
        was = row.failed_reason if row is not None else ""
        if row is not None:
            row.failed_since, row.failed_reason, row.clean_readings = None, "", 0
            row.save(update_fields=["failed_since", "failed_reason", "clean_readings"])
        message = f"{gpu.name} was returned to service by {actor.get_username()}" + (f" (it had failed: {was})." if was else ".")
        audit_record(
            action=AuditEntry.Action.GPU_HEALTHY, actor=actor, target=f"gpu:{gpu.pk}", reason=message,
            before={"healthy": False, "failed_reason": was}, after={"healthy": True},
        )
        for admin in _admins():
            outbox.append(dict(
                user=admin, kind=Notice.Kind.GPU_RECOVERED, message=message, data={"gpu": gpu.pk, "gpu_name": gpu.name}
            ))
    _send(outbox)
    return True
