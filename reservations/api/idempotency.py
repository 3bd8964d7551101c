"""Idempotency-Key for creates: a retry with the same key and user gets the first response back.

Only successful creates are stored: a 400 or 409 is worth retrying as a fresh request. The record is
written inside the booking's own transaction (the service calls back), so either both exist or
neither does; two
concurrent requests with one key race on the unique (user, key) and the loser replays the winner's
response.
"""

import hashlib
import json

from django.db import IntegrityError
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


def idempotent_series_create(request, make, render, replay):
    """Make a series at most once per (user, Idempotency-Key). Its occurrences are booked in
    transactions of their own after the series is made, so the record is written with the series
    (`make(on_created)` calls `on_created(series)` inside that transaction) and holds its id: a
    retry gets the series as it stands then (`replay(series_id)`), 201 with Idempotent-Replayed."""
    key = request.headers.get(HEADER)
    if key is None:
        return Response(render(make(None)), status=status.HTTP_201_CREATED)
    if not key or len(key) > 255:
        raise ValidationError({HEADER: ["Use a key of 1 to 255 characters."]})
    fingerprint = _fingerprint(request.data)
    record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if record is None:

        def remember(series):
            IdempotencyRecord.objects.create(
                user=request.user, key=key, fingerprint=fingerprint, status_code=status.HTTP_201_CREATED,
                response={"series": series.pk},
            )

        try:
            return Response(render(make(remember)), status=status.HTTP_201_CREATED)
        except IntegrityError:
            record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
            if record is None:
                raise
    if record.fingerprint != fingerprint:
        return _replay(record, fingerprint)  # 422: another body under this key
    return Response(replay(record.response["series"]), status=status.HTTP_201_CREATED, headers={"Idempotent-Replayed": "true"})


def idempotent_create(request, book, render):
    """Book at most once per (user, Idempotency-Key). `book(on_booked)` makes the booking, calling
    `on_booked(reservation)` inside its transaction (the service owns the transaction: locks.py);
    `render(reservation)` is the response body. Answers 201 with it, or the first response again."""
    key = request.headers.get(HEADER)
    if key is None:
        return Response(render(book(None)), status=status.HTTP_201_CREATED)
    if not key or len(key) > 255:
        raise ValidationError({HEADER: ["Use a key of 1 to 255 characters."]})
    fingerprint = _fingerprint(request.data)
    record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if record is not None:
        return _replay(record, fingerprint)
    rendered = {}

    def remember(reservation):
        rendered["data"] = render(reservation)
        IdempotencyRecord.objects.create(
            user=request.user, key=key, fingerprint=fingerprint, status_code=status.HTTP_201_CREATED,
            response=rendered["data"],
        )

    try:
        book(remember)
    except (IntegrityError, BookingConflict):
        # A concurrent request with this key committed first: it either took the unique key or,
        # having booked the same GPUs, made ours conflict. Its record is visible now.
        record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if record is None:
            raise
        return _replay(record, fingerprint)
    return Response(rendered["data"], status=status.HTTP_201_CREATED)
