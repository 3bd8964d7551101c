"""What the front door reads from the database: the replicas it may route to, with what each
serves (and the registry's bytes for it), its weight, and whether its booking and node still let it
take requests. Called every second or so from the front door's table (routing.table), in a thread."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q

from reservations import policy as booking_policy
from serving.models import ModelVersion, Replica, Serving

from .models import GpuModelWeight, GpuWeight
from .policy import ReplicaView

# GPU models with no GpuModelWeight row: a rough relative throughput (admins set their own).
DEFAULT_WEIGHTS = (("H100", 8.0), ("H200", 8.0), ("A100", 6.0), ("L40", 4.0), ("A10", 3.0), ("L4", 2.0), ("T4", 1.0))


def default_weight(gpu_model):
    upper = gpu_model.upper()
    return next((weight for marker, weight in DEFAULT_WEIGHTS if marker in upper), 1.0)


def weights_for(gpus):
    """{gpu id: weight}: the GPU's own (GpuWeight), else its model's (GpuModelWeight), else the default."""
    own = dict(GpuWeight.objects.filter(gpu__in=gpus).values_list("gpu_id", "weight"))
    by_model = dict(GpuModelWeight.objects.values_list("gpu_model", "weight"))
    return {gpu.pk: own.get(gpu.pk) or by_model.get(gpu.model) or default_weight(gpu.model) for gpu in gpus}


def taking_requests(replica, reservation, serving, now):
    """'ready' while the replica may take new requests; 'draining' from ROUTER_END_MARGIN_SECONDS
    before its booking ends (or its GPUs are reclaimed after a preemption), so what it has finishes
    before it is drained; and once it, its serving or its booking is draining or over."""
    margin = timedelta(seconds=settings.ROUTER_END_MARGIN_SECONDS)
    ends = reservation.reclaim_at if reservation.preempted_by_id and reservation.reclaim_at else reservation.end
    if (
        replica.state != Replica.State.READY
        or serving.status != Serving.Status.SERVING
        or reservation.status not in booking_policy.LIVE_STATUSES
        or now >= ends - margin
    ):
        return "draining"
    return "ready"


def routable_replicas(now):
    """(views, registry): a ReplicaView of every replica that is ready or draining (draining ones
    still finish their requests and are not chosen), and {(team id, name, version): sha256} from the
    registry for every version they serve (a version deleted since is missing: nothing serves it)."""
    replicas = list(
        Replica.objects.filter(state__in=[Replica.State.READY, Replica.State.DRAINING])
        .select_related("node", "gpu", "serving__reservation")
        .order_by("id")
    )
    weights = weights_for([r.gpu for r in replicas])
    heard_after = now - timedelta(seconds=settings.ROUTER_HEARTBEAT_GRACE_SECONDS)
    wanted = Q(pk__in=[])
    for replica in replicas:
        for model in replica.serving.resolved:
            wanted |= Q(model__team_id=replica.serving.reservation.team_id, model__name=model["name"], version=model["version"])
    registry = {
        (team_id, name, version): sha
        for team_id, name, version, sha in ModelVersion.objects.filter(wanted).values_list(
            "model__team_id", "model__name", "version", "sha256"
        )
    }
    views = []
    for replica in replicas:
        serving, reservation = replica.serving, replica.serving.reservation
        node = replica.node
        views.append(
            ReplicaView(
                id=replica.pk,
                address=replica.address,
                token=replica.token,
                node=node.hostname,
                team_id=reservation.team_id,
                weight=weights[replica.gpu_id],
                max_batch=serving.spec.get("max_batch", 8),
                # What it was started with: each version's bytes as its booking resolved them.
                serves={(m["name"], m["version"]): m["sha256"] for m in serving.resolved},
                state=taking_requests(replica, reservation, serving, now),
                node_online=node.online and node.last_heartbeat is not None and node.last_heartbeat >= heard_after,
                resident={(m["name"], m["version"]): m.get("sha256") for m in replica.resident},
            )
        )
    return views, registry


def registry_version(team_id, name, version):
    """The registry's SHA-256 of the team's `name:version`, or None."""
    return (
        ModelVersion.objects.filter(model__team_id=team_id, model__name=name, version=version)
        .values_list("sha256", flat=True)
        .first()
    )
