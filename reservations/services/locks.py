"""Row locks, taken in one order everywhere, and the transactions that hold them.

The order (a transaction that needs several of these takes them in this order, never backwards):

1. reservations, in id order (the one being changed; a preemption's victims; a victim's rebookings,
   which always have higher ids than the victim);
2. team quotas, in team id order (whatever adds a team's GPU time checks it against the team's
   quota under this lock: a booking, a move, a waitlist confirmation, a preemption's rebookings);
3. GPUs, in id order (whatever takes or moves GPU time);
4. training jobs (stopping the job of a booking that ends early);
5. registered models, in id order (serving: a serving booking locks the models it names as it is
   written, so a model cannot be deleted between the check and the booking; the registry locks
   only these rows, and advisory locks on stored files after them).

6. a series (a recurring booking, services.series), last: an occurrence's booking locks its series
   as it is written, to check that the occurrence was not cancelled meanwhile. Otherwise a series is
   locked alone, in a short transaction of its own for its bookkeeping (how far beat has booked it,
   what was skipped, a change or a cancellation), which waits for no other lock while it holds it;
   its occurrences are then booked, changed or cancelled one by one, each in the transaction of the
   booking service that does it, after the series' lock is released.

Two transactions that follow one order cannot deadlock. The order only holds if each service's
transaction is its own: a GPU lock taken inside someone else's transaction lives until that outer
transaction ends, so a later step of the same request (a preemption locking its victims) would then
lock a reservation while holding GPUs. So every service that locks opens its transaction with
`service_transaction()`, which refuses to run inside another one (Django's durable atomic; test
cases' own wrapping transactions are allowed). Callers that must write something together with a
booking pass it in (`reservation_create(on_booked=...)`) instead of wrapping the service.

On PostgreSQL an exclusion constraint backs the GPU locks up: should two live allocations ever
overlap on one GPU, the insert fails (services read that as "taken").
"""

from django.db import transaction

from .. import policy, selectors
from ..models import GPU, Reservation, TeamQuota

EXCLUSION_CONSTRAINT = "allocation_no_overlap"


def service_transaction():
    """The transaction of a service that locks rows. Raises RuntimeError inside another transaction."""
    return transaction.atomic(durable=True)


def lock_reservation(reservation_id, *, skip_locked=False):
    """Lock one reservation row (1st in the order); None if it is gone (or, with skip_locked, busy)."""
    return (
        Reservation.objects.select_for_update(of=("self",), skip_locked=skip_locked)
        .select_related("user", "team")
        .filter(pk=reservation_id)
        .first()
    )


def lock_reservations(queryset):
    """Lock several reservations, in id order (1st in the order)."""
    return list(queryset.select_for_update(of=("self",)).select_related("user", "team").order_by("id"))


def lock_gpus(ids):
    """Lock GPU rows in id order (2nd in the order). `ids` may be a list or a values("id") queryset."""
    return list(GPU.objects.select_for_update().filter(id__in=ids).order_by("id").values_list("id", flat=True))


def lock_all_gpus():
    """Every GPU: a preemption may move or rebook its victims onto any of them."""
    return lock_gpus(GPU.objects.values("id"))


def lock_healthy_gpus():
    """Every healthy GPU: what makes picking `gpu_count` free GPUs safe (it serialises such picks)."""
    return lock_gpus(GPU.objects.filter(healthy=True).values("id"))


def lock_quota_rows(team_ids):
    """Lock the quota rows of several teams, in team id order (2nd in the order)."""
    return list(
        TeamQuota.objects.select_for_update().filter(team_id__in=team_ids).order_by("team_id").values_list("team_id", flat=True)
    )


def lock_team_quota(team_id, start, end, *, exclude=()):
    """Lock a team's quota row (2nd in the order), then read what counts against it around
    [start, end) (selectors.quota_tally): a policy.Quota, or None for a team without a quota (no
    row, nothing to lock: no limit to race for). Two statements: at READ COMMITTED a statement that
    waited for the lock still reads from the snapshot it began with, so the read that must see the
    previous holder's bookings is a statement of its own, begun once the lock is held."""
    row = TeamQuota.objects.select_for_update(of=("self",)).filter(team_id=team_id).values(*selectors.QUOTA_VALUES).first()
    return None if row is None else selectors.quota_of(row, team_id, start, end, exclude=exclude)


def is_overlap_violation(exc):
    """Whether an IntegrityError is the exclusion constraint: two live bookings on one GPU (on SQLite,
    the triggers of migration 0014, whose message starts with the constraint's name)."""
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == EXCLUSION_CONSTRAINT
    return str(exc.__cause__).startswith(EXCLUSION_CONSTRAINT)


OCCURRENCE_CONSTRAINT = "reservation_one_per_occurrence"


def is_occurrence_violation(exc):
    """Whether an IntegrityError is a second booking of one occurrence of a series (the constraint
    reservation_one_per_occurrence; SQLite names its columns instead)."""
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == OCCURRENCE_CONSTRAINT
    return "reservations_reservation.series_id, reservations_reservation.occurrence" in str(exc.__cause__)

