"""GPU time used: when a booking's work (its training job, or its serving's replicas: the kinds of
work in reservations.jobs) ran on its GPUs, as SQL for the reads that add it up (the staff usage
report, a team's week). This app never imports the apps behind the work: it reads the relations
they declare."""

from datetime import timedelta

from django.core.exceptions import FieldDoesNotExist
from django.db.models import DurationField, ExpressionWrapper, F, FilteredRelation, Q, Sum, Value
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


def with_runs(bookings, lo):
    """`bookings` with each kind of work joined where its run can reach `lo` (it ended at or after
    `lo`, or has not ended), for used_gpu_seconds: the join reads that part of the work's ended_at
    index, never every job ever run (on a plain join PostgreSQL would hash the whole table)."""
    return bookings.alias(**{
        _run(work): FilteredRelation(work, condition=Q(**{f"{work}__ended_at__gte": lo}) | Q(**{f"{work}__ended_at": None}))
        for work in work_relations()
    })


def nothing_ran():
    """Over with_runs(bookings, lo), for bookings starting at or after `lo`: nothing of its work began
    (no work, or work with no started_at). Work that ended before `lo` is left out of the join, and
    no booking's work ends before the booking starts."""
    condition = Q()
    for work in work_relations():
        condition &= Q(**{f"{_run(work)}__isnull": True}) | Q(**{f"{_run(work)}__started_at__isnull": True})
    return condition


def _run(work):
    return f"{work}_run"


def used_gpu_seconds(lo, hi, now, where=Q()):
    """SQL aggregates over bookings (with_runs(bookings, a time at or before `lo`)), one per kind of
    work, to be added up: the GPU-seconds inside [lo, hi) in which each booking's work ran,
    [started_at, ended_at or now], within the booking's own window, times its GPUs. A booking without
    work (or whose work never started or ended before `lo`) adds nothing; `where` narrows the bookings
    counted. The relations are one-to-one: each joins at most one row, so the sums count each booking
    once."""
    in_lo, in_hi = Greatest(F("start"), Value(lo)), Least(F("end"), Value(hi))
    return [
        Sum(
            seconds(Greatest(in_lo, F(f"{_run(work)}__started_at")),
                    Least(in_hi, Coalesce(F(f"{_run(work)}__ended_at"), Value(now))))
            * F("gpu_count"),
            filter=where & Q(**{f"{_run(work)}__started_at__isnull": False}),
        )
        for work in work_relations()
    ]
