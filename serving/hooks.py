"""The serving side of a booking, as the booking services see it (reservations.jobs.WorkKind):
serving.apps registers it for the booking field `serve`, which names the models its replicas serve."""

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Prefetch

from reservations.jobs import JobState
from reservations.models import Reservation

from . import services
from .selectors import replicas_shown
from .serializers import ServingSerializer
from .models import Replica, Serving
from .spec import ServeSpecSerializer


def _serving(reservation):
    try:
        return reservation.serving
    except ObjectDoesNotExist:
        return None


class ServingWork:
    field = "serve"
    related_name = "serving"

    def spec_serializer(self):
        return ServeSpecSerializer(required=False, allow_null=True, default=None)

    def check_spec(self, *, user, team, spec, series=False):
        return services.serving_spec_check(user=user, team=team, spec=spec)

    def create(self, *, reservation, spec, now):
        if spec is None:
            # Cache "serves nothing" on the booking, so showing it asks nothing more.
            Reservation.serving.related.set_cached_value(reservation, None)
            return []
        return services.serving_create(reservation=reservation, spec=spec, now=now)

    def replace(self, *, reservation, spec, now):
        services.serving_replace(reservation=reservation, spec=spec)

    def stop(self, *, reservation, reason):
        services.serving_stop_for_booking(reservation=reservation, reason=reason)

    def state(self, reservation):
        serving = Serving.objects.filter(reservation=reservation).first()
        if serving is None:
            return None
        spawned = (
            Replica.objects.filter(serving=serving, spawned_at__isnull=False)
            .order_by("spawned_at").values_list("spawned_at", flat=True).first()
        )
        return JobState(
            field=self.field,
            id=serving.pk,
            status=serving.status,
            spec=serving.spec,
            live=serving.status in Serving.LIVE,
            ended=serving.status in Serving.FINISHED,
            completed=False,  # serving has no end of its own: it serves until the booking ends
            spawned_at=spawned,
        )

    def rebook(self, state):
        return state.spec, "its models are served there again"

    def render(self, reservation):
        serving = _serving(reservation)
        return ServingSerializer(serving).data if serving is not None else None

    def prefetch(self):
        return [Prefetch("serving__replicas", queryset=replicas_shown())]
