"""Authentication that also throttles what DRF's throttles never see.

DRF authenticates, then checks permissions, then throttles: a request with a bad token fails at
the first step and an anonymous one at the second (401), so neither reaches a throttle class. Both
are counted here instead, per client address (apibase.throttling.client_ip), in the default cache,
and a client over its rate gets 429 with Retry-After. Rates: DEFAULT_THROTTLE_RATES "failed_token"
and "anon" (API_THROTTLE_FAILED_TOKEN, API_THROTTLE_ANON). The bad-token rule is
apibase.throttling's, which the inference front door applies too.
"""

from drf_spectacular.authentication import SessionScheme
from rest_framework import authentication, exceptions

from apibase.throttling import ClientRateThrottle, client_ip, failed_token_wait


class AnonymousThrottle(ClientRateThrottle):
    scope = "anon"


class TokenAuthentication(authentication.TokenAuthentication):
    """A valid token is always accepted; a bad one is counted per client address and, past the
    rate, answered 429 instead of 401 (apibase.throttling.failed_token_wait)."""

    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            wait = failed_token_wait(client_ip(request))
            if wait is not None:
                raise exceptions.Throttled(wait=wait) from None
            raise


class SessionAuthentication(authentication.SessionAuthentication):
    """Last in DEFAULT_AUTHENTICATION_CLASSES: a request it does not authenticate either is
    anonymous, and counts against the anonymous rate."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            wait = AnonymousThrottle(client_ip(request)).over()
            if wait is not None:
                raise exceptions.Throttled(wait=wait)
        return result


class SessionAuthenticationScheme(SessionScheme):
    """The OpenAPI schema describes the subclass as the session cookie it is."""

    target_class = SessionAuthentication
