from django.utils import timezone

from reservations import services

from ..conftest import NEXT_SLOT


def book(user, gpus, *, start=NEXT_SLOT, slots=1, **kwargs):
    """Book through the service, as the API would, for test set-up."""
    return services.reservation_create(
        user=user, gpu_ids=[g.pk for g in gpus], start=start, slots=slots, now=timezone.now(), **kwargs
    )
