import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from ..models import AuditEntry, Reservation


class AwareDateTimeFormField(forms.Field):
    """ISO 8601 with an offset or Z; a naive value is rejected rather than read in some zone."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValidationError("Enter an ISO 8601 datetime, e.g. 2030-01-01T10:00:00Z.")
        if parsed.tzinfo is None:
            raise ValidationError("Give the time zone (an offset or Z).")
        return parsed


class AwareDateTimeFilter(django_filters.Filter):
    field_class = AwareDateTimeFormField


class ReservationFilter(django_filters.FilterSet):
    # [start, end) overlap: a reservation matches if it ends after `start` and starts before `end`.
    start = AwareDateTimeFilter(field_name="end", lookup_expr="gt")
    end = AwareDateTimeFilter(field_name="start", lookup_expr="lt")
    gpu = django_filters.NumberFilter(field_name="allocations__gpu_id", distinct=True)
    user = django_filters.CharFilter(field_name="user__username")
    team = django_filters.CharFilter(field_name="team__slug")
    status = django_filters.ChoiceFilter(choices=Reservation.Status.choices)

    class Meta:
        model = Reservation
        fields = ["start", "end", "gpu", "user", "team", "status"]


class AuditFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor__username")
    action = django_filters.ChoiceFilter(choices=AuditEntry.Action.choices)
    reservation = django_filters.NumberFilter(field_name="reservation_id")
    target = django_filters.CharFilter()
    since = AwareDateTimeFilter(field_name="created", lookup_expr="gte")

    class Meta:
        model = AuditEntry
        fields = ["actor", "action", "reservation", "target", "since"]
