"""The inventory: nodes and their GPUs, as each node's discovery reports them."""

from dataclasses import dataclass

from django.utils import timezone

from ..models import GPU, Node
from .locks import lock_gpus, service_transaction


@dataclass(frozen=True)
class Device:
    """A device as a node reports it (trainer.hardware discovers them: NVML, or CPU devices)."""

    index: int
    model: str
    memory_mb: int
    uuid: str = ""


def node_register(*, hostname, devices, now=None):
    """Create or update a node and its devices from discovery. A device that disappeared is kept
    (bookings point at it) but marked unhealthy, so nothing new is booked on it."""
    now = now or timezone.now()
    with service_transaction():
        node, _ = Node.objects.select_for_update().get_or_create(hostname=hostname)
        # Its GPUs in id order (locks.py) before they are written, not in the devices' index order.
        lock_gpus(node.gpus.values("id"))
        node.online, node.last_heartbeat = True, now
        node.save(update_fields=["online", "last_heartbeat"])
        seen = []
        # A GPU the health check took out (services.health) stays out across a worker restart: it
        # comes back through its clean readings, not by being discovered again.
        failed = set(node.gpus.filter(reading__failed_since__isnull=False).values_list("index", flat=True))
        for device in devices:
            gpu, _ = GPU.objects.update_or_create(
                node=node,
                index=device.index,
                defaults={
                    "model": device.model, "memory_mb": device.memory_mb, "uuid": device.uuid,
                    "healthy": device.index not in failed,
                },
            )
            seen.append(gpu.pk)
        node.gpus.exclude(pk__in=seen).update(healthy=False)
    return node
