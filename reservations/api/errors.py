"""Map domain errors to the contract's responses: 400 {field: [...]}, 409 with conflicts."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apibase.fields import AwareDateTimeField

from ..errors import BookingConflict, BookingError
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


def exception_handler(exc, context):
    if isinstance(exc, BookingError):
        return Response(exc.as_dict(), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, BookingConflict):
        return conflict_response(exc)
    return drf_exception_handler(exc, context)
