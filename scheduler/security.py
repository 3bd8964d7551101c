"""The client address that login lockout and API throttling count by, the username that login
lockout counts by, the lockout response, and the bad-token rule that the API and the inference front
door (routing) share."""

import math

from axes.helpers import get_cool_off, get_lockout_message
from django.http import HttpResponse
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


def client_ip(request):
    """The connection's address, or with NUM_PROXIES the address the nearest trusted proxy saw
    (DRF's rule, so that django-axes and the API's throttles agree on who a client is)."""
    return BaseThrottle().get_ident(request)


def lockout_username(request, credentials):
    """The username django-axes counts failed sign-ins by: the one given, in lower case, since the
    directory finds a uid whatever its case (ALICE, Alice and alice are one account to guess, not
    three allowances of failures), and cut to the 255 characters axes stores."""
    username = credentials.get("username") if credentials else request.POST.get("username")
    return username.lower()[:255] if username else username


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' plain lockout page, with the Retry-After that a 429 should carry. Every attempt
    made while locked starts the cool-off again, so the wait is a whole cool-off."""
    response = HttpResponse(get_lockout_message(), status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(math.ceil(get_cool_off(request).total_seconds()))
    return response


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
