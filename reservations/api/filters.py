import django_filters

from apibase.fields import AwareDateTimeFilter, IdFilter

from ..models import AuditEntry, Reservation


class ReservationFilter(django_filters.FilterSet):
    # [start, end) overlap: a reservation matches if it ends after `start` and starts before `end`.
    start = AwareDateTimeFilter(field_name="end", lookup_expr="gt")
    end = AwareDateTimeFilter(field_name="start", lookup_expr="lt")
    gpu = IdFilter(field_name="allocations__gpu_id", distinct=True)
    user = django_filters.CharFilter(field_name="user__username")
    team = django_filters.CharFilter(field_name="team__slug")
    status = django_filters.ChoiceFilter(choices=Reservation.Status.choices)

    class Meta:
        model = Reservation
        fields = ["start", "end", "gpu", "user", "team", "status"]


class AuditFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor__username")
    action = django_filters.ChoiceFilter(choices=AuditEntry.Action.choices)
    reservation = IdFilter(field_name="reservation_id")
    target = django_filters.CharFilter()
    since = AwareDateTimeFilter(field_name="created", lookup_expr="gte")

    class Meta:
        model = AuditEntry
        fields = ["actor", "action", "reservation", "target", "since"]
