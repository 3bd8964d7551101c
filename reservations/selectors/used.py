"""GPU time used: when a booking's work (its training job, or its serving's replicas: the kinds of
work in reservations.jobs) ran on its GPUs, as SQL for the reads that add it up (the staff usage
report, a team's week). This app never imports the apps behind the work: it reads the relations
they declare."""

from datetime import timedelta

from django.core.exceptions import FieldDoesNotExist
from django.db.models import DurationField, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Least

from .. import jobs
from ..models import Reservation
from ..sql import EpochSeconds


def seconds(lo, hi):
    """SQL: the length of [lo, hi) in seconds, 0 when it is empty."""
    return EpochSeconds(Greatest(duration(lo, hi), Value(timedelta(0))))


def duration(lo, hi):
    return ExpressionWrapper(hi - lo, output_field=DurationField())


def work_relations():
    """The reverse relations the apps behind each kind of work declare on bookings (reservations.jobs):
    training jobs, servings. None on an installation without either: there, nothing counts as used."""
    return [name for name in jobs.work_kinds.related_names if _has_field(Reservation, name)]


def _has_field(model, name):
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def used_gpu_seconds(lo, hi, now, where=Q()):
    """SQL aggregates over bookings, one per kind of work, to be added up: the GPU-seconds inside
    [lo, hi) in which each booking's work ran, [started_at, ended_at or now], within the booking's
    own window, times its GPUs. A booking without work (or whose work never started) adds nothing;
    `where` narrows the bookings counted. The relations are one-to-one: each joins at most one row,
    so the sums count each booking once."""
    in_lo, in_hi = Greatest(F("start"), Value(lo)), Least(F("end"), Value(hi))
    return [
        Sum(
            seconds(Greatest(in_lo, F(f"{work}__started_at")), Least(in_hi, Coalesce(F(f"{work}__ended_at"), Value(now))))
            * F("gpu_count"),
            filter=where & Q(**{f"{work}__started_at__isnull": False}),
        )
        for work in work_relations()
    ]
