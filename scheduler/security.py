"""What django-axes asks of the project (settings name these): the username failed sign-ins are
counted by, and the lockout response. The client's address it counts by is apibase.throttling's
client_ip, the API's and the front door's too."""

import math

from axes.helpers import get_cool_off, get_lockout_message
from django.http import HttpResponse


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
