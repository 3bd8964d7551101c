import django_filters
from django.db.models import Subquery
from django_filters.constants import EMPTY_VALUES

from apibase.fields import AwareDateTimeFilter, IdFilter

from ..models import Allocation, AuditEntry, Reservation


class NamedFilter(django_filters.CharFilter):
    """`?user=alice`: rows whose foreign key `field_name` is the one row whose `key` is the value,
    looked up first (a scalar subquery). A join on the name would leave PostgreSQL to read every row
    of the history and sort them; an id lets it read the (user, start) index, a page of it. No such
    row: no rows."""

    def __init__(self, *, key, **kwargs):
        super().__init__(**kwargs)
        self.key = key

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        related = qs.model._meta.get_field(self.field_name).related_model
        named = related._default_manager.filter(**{self.key: value}).values("pk")[:1]
        return qs.filter(**{f"{self.field_name}_id": Subquery(named)})


class ReservationFilter(django_filters.FilterSet):
    # [start, end) overlap: a reservation matches if it ends after `start` and starts before `end`.
    start = AwareDateTimeFilter(field_name="end", lookup_expr="gt")
    end = AwareDateTimeFilter(field_name="start", lookup_expr="lt")
    # A subquery, not a join: no DISTINCT over the GPU's history, and the page read in start order.
    gpu = IdFilter(method="filter_gpu")
    user = NamedFilter(field_name="user", key="username")
    team = NamedFilter(field_name="team", key="slug")
    status = django_filters.ChoiceFilter(choices=Reservation.Status.choices)

    class Meta:
        model = Reservation
        fields = ["start", "end", "gpu", "user", "team", "status"]

    def filter_gpu(self, queryset, name, value):
        return queryset.filter(pk__in=Allocation.objects.filter(gpu_id=value).values("reservation_id"))


class AuditFilter(django_filters.FilterSet):
    actor = NamedFilter(field_name="actor", key="username")
    action = django_filters.ChoiceFilter(choices=AuditEntry.Action.choices)
    reservation = IdFilter(field_name="reservation_id")
    target = django_filters.CharFilter()
    since = AwareDateTimeFilter(field_name="created", lookup_expr="gte")

    class Meta:
        model = AuditEntry
        fields = ["actor", "action", "reservation", "target", "since"]
