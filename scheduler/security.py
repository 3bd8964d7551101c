"""The client address that login lockout and API throttling count by, the username that login
lockout counts by, and the lockout response."""

import math

from axes.helpers import get_cool_off, get_lockout_message
from django.http import HttpResponse
from rest_framework.throttling import BaseThrottle


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
