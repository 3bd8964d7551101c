"""Idempotency-Key for creates: a retry with the same key and user gets the first response back.

Only successful creates are stored: a 400 or 409 is worth retrying as a fresh request. The record is
written in the same transaction as the booking, so either both exist or neither does; two
concurrent requests with one key race on the unique (user, key) and the loser replays the winner's
response.
"""

import hashlib
import json

from django.db import IntegrityError, transaction
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from ..errors import BookingConflict
from ..models import IdempotencyRecord

HEADER = "Idempotency-Key"


def _fingerprint(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _replay(record, fingerprint):
    if record.fingerprint != fingerprint:
        return Response(
            {"detail": f"This {HEADER} was used with a different request body."},
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    return Response(record.response, status=record.status_code, headers={"Idempotent-Replayed": "true"})


def idempotent_create(request, create):
    """Run `create()` (returns (data, status_code)) at most once per (user, Idempotency-Key)."""
    key = request.headers.get(HEADER)
    if key is None:
        data, code = create()
        return Response(data, status=code)
    if not key or len(key) > 255:
        raise ValidationError({HEADER: ["Use a key of 1 to 255 characters."]})
    fingerprint = _fingerprint(request.data)
    record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if record is not None:
        return _replay(record, fingerprint)
    try:
        with transaction.atomic():
            data, code = create()
            IdempotencyRecord.objects.create(
                user=request.user, key=key, fingerprint=fingerprint, status_code=code, response=data
            )
    except (IntegrityError, BookingConflict):
        # A concurrent request with this key committed first: it either took the unique key or,
        # having booked the same GPUs, made ours conflict. Its record is visible now.
        record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if record is None:
            raise
        return _replay(record, fingerprint)
    return Response(data, status=code)
