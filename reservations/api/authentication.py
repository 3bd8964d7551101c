"""Authentication that also throttles what DRF's throttles never see.

DRF authenticates, then checks permissions, then throttles: a request with a bad token fails at
the first step and an anonymous one at the second (401), so neither reaches a throttle class. Both
are counted here instead, per client address (scheduler.security.client_ip), in the default cache,
and a client over its rate gets 429 with Retry-After. Rates: DEFAULT_THROTTLE_RATES "failed_token"
and "anon" (API_THROTTLE_FAILED_TOKEN, API_THROTTLE_ANON).
"""

from drf_spectacular.authentication import SessionScheme
from rest_framework import authentication, exceptions
from rest_framework.throttling import SimpleRateThrottle


class ClientRateThrottle(SimpleRateThrottle):
    """A rate per client address which, besides DRF's check-and-count (`allow_request`), can be
    checked without counting (`exceeded`) and counted without checking (`count`). Like DRF's own throttles, the read-then-write on the cache is not
    atomic: concurrent requests may slip a few past the rate, which a throttle can live with."""

    def get_cache_key(self, request, view=None):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def _load(self, request):
        self.key = self.get_cache_key(request)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()

    def exceeded(self, request):
        if self.rate is None:
            return False
        self._load(request)
        return len(self.history) >= self.num_requests

    def count(self, request):
        if self.rate is None:
            return
        self._load(request)
        self.throttle_success()

    def refuse(self):
        raise exceptions.Throttled(wait=self.wait())


class FailedTokenThrottle(ClientRateThrottle):
    scope = "failed_token"


class AnonymousThrottle(ClientRateThrottle):
    scope = "anon"


class TokenAuthentication(authentication.TokenAuthentication):
    """A client that has sent too many bad tokens is refused before its token is even looked up,
    so that guessing stays at the rate whatever the guesses are."""

    def authenticate(self, request):
        if not authentication.get_authorization_header(request):
            return None
        throttle = FailedTokenThrottle()
        if throttle.exceeded(request):
            throttle.refuse()
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.count(request)
            raise


class SessionAuthentication(authentication.SessionAuthentication):
    """Last in DEFAULT_AUTHENTICATION_CLASSES: a request it does not authenticate either is
    anonymous, and counts against the anonymous rate."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            throttle = AnonymousThrottle()
            if not throttle.allow_request(request, None):
                throttle.refuse()
        return result


class SessionAuthenticationScheme(SessionScheme):
    """The OpenAPI schema describes the subclass as the session cookie it is."""

    target_class = SessionAuthentication
