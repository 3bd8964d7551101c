"""Who a client is, and the rates counted per client: the same for the booking API, django-axes and
the inference front door (routing), which all import it from here, below every app. Counts live in
the default cache (CACHE_URL)."""

import math

from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


def client_ip(request):
    """The connection's address, or with NUM_PROXIES the address the nearest trusted proxy saw
    (DRF's rule, so that django-axes and the API's throttles agree on who a client is)."""
    return BaseThrottle().get_ident(request)


class ClientRateThrottle(SimpleRateThrottle):
    """A DRF rate (DEFAULT_THROTTLE_RATES[scope]) per client address, counted in the default cache
    (CACHE_URL): shared by every web worker and every front door when that is Redis. Like DRF's own
    throttles, the read-then-write on the cache is not atomic: concurrent requests may slip a few
    past the rate, which a throttle can live with."""

    def __init__(self, ident):
        super().__init__()
        self.ident = ident

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}

    def over(self):
        """Count one request; None while within the rate, else the whole seconds to wait."""
        if self.allow_request(None, None):
            return None
        return max(1, math.ceil(self.wait() or 1))


class FailedTokenThrottle(ClientRateThrottle):
    scope = "failed_token"


def failed_token_wait(ident):
    """The bad-token rule, the same for the API and the front door: count one bad token sent from
    address `ident` (client_ip); None while that address is within API_THROTTLE_FAILED_TOKEN, else
    the seconds to wait, for a 429 with Retry-After in place of the 401.

    Only a bad token comes here, after its lookup failed: a valid token is accepted whatever its
    address sent before, so one bad actor behind a shared NAT or CI runner address locks nobody else
    out. Tokens are 160 random bits, beyond guessing at any rate; the 429 tells a client that keeps
    sending bad ones (a broken CI secret, a scanner) to back off."""
    return FailedTokenThrottle(ident).over()
