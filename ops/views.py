import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scheduler.security import client_ip

from .metrics import scrape


def _allowed(request):
    token = settings.METRICS_BEARER_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request) or "")
    except ValueError:  # with NUM_PROXIES the address comes from a header, which may hold anything
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_IPS)


@require_GET
def metrics(request):
    """Prometheus text format, for the monitor only: the listed addresses or the bearer token."""
    if not _allowed(request):
        return HttpResponseForbidden("Metrics are for the monitoring system.\n", content_type="text/plain")
    return HttpResponse(generate_latest(scrape()), content_type=CONTENT_TYPE_LATEST)
