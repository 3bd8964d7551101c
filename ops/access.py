"""Who may read metrics: the rule the web's /metrics and /metrics/replicas and the inference front
door's /metrics share (its own process, routing.app, asks the same)."""

import hmac
import ipaddress

from django.conf import settings


def metrics_allowed(headers, peer):
    """The bearer token (METRICS_BEARER_TOKEN), or a direct peer in METRICS_ALLOWED_IPS. The list is
    matched against the connection's own peer, never X-Forwarded-For: behind a proxy any client
    could forge that header. Prometheus scrapes directly, so a request that came through a proxy
    (it carries the header) is refused: the proxy's own address, often 127.0.0.1, would otherwise
    let every client it forwards in. `headers`: a case-insensitive mapping."""
    token = settings.METRICS_BEARER_TOKEN
    scheme, _, presented = headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return True
    if "X-Forwarded-For" in headers:
        return False
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_IPS)
