"""Map domain errors to the contract's responses: 400 {field: [...]}, 409 with conflicts."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apibase.fields import AwareDateTimeField

from .. import policy
from ..errors import BookingConflict, BookingError, QuotaExceeded, SeriesConflict
from .serializers import ConflictSerializer, WindowSerializer


def conflict_response(exc):
    body = {
        "detail": exc.message,
        "conflicts": ConflictSerializer(exc.conflicts, many=True).data,
        "suggestions": WindowSerializer(exc.suggestions, many=True).data,
    }
    if exc.earliest_allowed_start is not None:
        body["earliest_allowed_start"] = AwareDateTimeField().to_representation(exc.earliest_allowed_start)
    return Response(body, status=status.HTTP_409_CONFLICT)


def quota_response(exc):
    """409 quota_exceeded: which limit, the team's use and the limit in that week (or at that
    moment), when room frees, and how to borrow (docs/api.md)."""
    excess = exc.excess
    moment = AwareDateTimeField().to_representation
    quota = {
        "team": excess.team_slug,
        "limit": excess.limit,
        "allowed": excess.allowed,
        "used": round(excess.used, 4),
        "requested": round(excess.requested, 4),
        "week": policy.week_label(excess.week) if excess.week is not None else None,
        "at": moment(excess.at) if excess.at is not None else None,
        "frees_at": moment(excess.frees_at) if excess.frees_at is not None else None,
        "borrowable": excess.borrowable,
        "in_quota_slots": excess.in_quota_slots,
    }
    return Response({"detail": exc.message, "code": exc.code, "quota": quota}, status=status.HTTP_409_CONFLICT)


def series_conflict_response(exc):
    """409 series_conflict: nothing was booked; each occurrence in the way, with its conflicts and
    suggestions (docs/api.md)."""
    moment = AwareDateTimeField().to_representation
    occurrences = [
        {
            "start": moment(p.start),
            "end": moment(p.end),
            "state": p.state,
            "detail": p.detail,
            "conflicts": ConflictSerializer(p.conflicts, many=True).data,
            "suggestions": WindowSerializer(exc.suggestions.get(p.start, []), many=True).data,
        }
        for p in exc.occurrences
    ]
    return Response({"detail": exc.message, "code": exc.code, "occurrences": occurrences}, status=status.HTTP_409_CONFLICT)


def exception_handler(exc, context):
    if isinstance(exc, BookingError):
        return Response(exc.as_dict(), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, BookingConflict):
        return conflict_response(exc)
    if isinstance(exc, QuotaExceeded):
        return quota_response(exc)
    if isinstance(exc, SeriesConflict):
        return series_conflict_response(exc)
    return drf_exception_handler(exc, context)
