"""One reading of a datetime for the whole API, in bodies and in query parameters alike: ISO 8601
with an offset or Z in, an aware UTC datetime out. Anything else is the caller's error, never a 500."""

from datetime import datetime, timedelta, timezone as dt_timezone

import django_filters
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

# PostgreSQL refuses a UTC offset of 16 hours or more ("time zone displacement out of range");
# Python accepts up to 24. Real zones stay within -12:00..+14:00, so nothing of value is lost.
MAX_UTC_OFFSET = timedelta(hours=16)
# Far enough inside Python's years 1 to 9999 that adding a booking's length (10,000 slots of at
# most a day) or the horizon to an accepted time cannot overflow.
MIN_TIME = datetime(1000, 1, 1, tzinfo=dt_timezone.utc)
MAX_TIME = datetime(9000, 1, 1, tzinfo=dt_timezone.utc)

NAIVE = "Give the time zone (an offset or Z), e.g. 2030-01-01T10:00:00Z."
INVALID = "Enter an ISO 8601 datetime with an offset or Z, e.g. 2030-01-01T10:00:00Z."
OFFSET = "Use a UTC offset between -15:59 and +15:59."
OUT_OF_RANGE = "Give a time between the years 1000 and 9000 (UTC)."


def parse_aware_datetime(value):
    """`value` (an ISO 8601 string or an aware datetime) as a UTC datetime; ValueError says why not."""
    if isinstance(value, str):
        try:
            value = parse_datetime(value.strip())
        except ValueError:  # well formed but impossible: 25 o'clock, an offset of a day
            value = None
    if not isinstance(value, datetime):
        raise ValueError(INVALID)
    if value.utcoffset() is None:  # never read in some zone (reservations.policy.require_aware)
        raise ValueError(NAIVE)
    if abs(value.utcoffset()) >= MAX_UTC_OFFSET:
        raise ValueError(OFFSET)
    try:
        value = value.astimezone(dt_timezone.utc)
    except OverflowError:  # before year 1 or after 9999 once in UTC
        raise ValueError(OUT_OF_RANGE) from None
    if not MIN_TIME <= value < MAX_TIME:
        raise ValueError(OUT_OF_RANGE)
    return value


class AwareDateTimeField(serializers.DateTimeField):
    """The DRF field: parse_aware_datetime in; UTC with Z out."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=dt_timezone.utc, **kwargs)

    def to_internal_value(self, value):
        try:
            return parse_aware_datetime(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc), code="invalid") from None


class AwareDateTimeFormField(forms.Field):
    """The django-filter form field: parse_aware_datetime for a query parameter."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return parse_aware_datetime(value)
        except ValueError as exc:
            raise DjangoValidationError(str(exc), code="invalid") from None


class AwareDateTimeFilter(django_filters.Filter):
    field_class = AwareDateTimeFormField


# The largest id either database holds (a signed 64-bit integer): SQLite cannot even compare with a
# larger number (an OverflowError, a 500), so a larger one is the client's 400.
MAX_ID = 2**63 - 1


class IdFilter(django_filters.NumberFilter):
    """The django-filter for a row's id in a query parameter: a whole number from 1 to MAX_ID."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)
