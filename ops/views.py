from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.models import Replica

from .access import metrics_allowed
from .metrics import scrape


def _allowed(request):
    return metrics_allowed(request.headers, request.META.get("REMOTE_ADDR"))


@require_GET
def metrics(request):
    """Prometheus text format, for the monitor only: the listed addresses or the bearer token."""
    if not _allowed(request):
        return HttpResponseForbidden("Metrics are for the monitoring system.\n", content_type="text/plain")
    return HttpResponse(generate_latest(scrape()), content_type=CONTENT_TYPE_LATEST)


@require_GET
def replica_targets(request):
    """Prometheus HTTP service discovery (http_sd_configs) of the live replicas, whose ports come and
    go with serving bookings: each one's address, labelled with its replica, node, device and team.
    The same access rule as /metrics; a replica's own /metrics takes METRICS_BEARER_TOKEN."""
    if not _allowed(request):
        return HttpResponseForbidden("Metrics are for the monitoring system.\n", content_type="text/plain")
    replicas = Replica.objects.filter(state__in=Replica.LIVE).select_related("node", "serving__reservation__team")
    targets = [
        {
            "targets": [replica.address],
            "labels": {
                "replica": str(replica.pk),
                "node": replica.node.hostname,
                "device": replica.device,
                "team": replica.serving.reservation.team.slug,
                "reservation": str(replica.serving.reservation_id),
            },
        }
        for replica in replicas.order_by("id")
    ]
    return JsonResponse(targets, safe=False)
