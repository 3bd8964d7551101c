"""Fair sharing in the booking transaction: a booking checked against its team's quota under the
quota row's lock (locks.py), booked in quota, booked as borrowed, or refused; and quota changes."""

from dataclasses import dataclass

from .. import policy
from ..errors import QuotaExceeded
from ..models import AuditEntry, TeamQuota
from .audit import audit_record
from .locks import lock_team_quota, service_transaction


@dataclass(frozen=True)
class QuotaDecision:
    """How a booking stands against its team's quota: `borrowed` books it as borrowed time; `over`
    is the limit a staff booking passes (audited)."""

    borrowed: bool = False
    over: policy.QuotaExcess | None = None

    @property
    def audit_reason(self):
        if self.over is None:
            return ""
        return f"Booked over the quota by staff: {self.over.describe()}"


WITHIN = QuotaDecision()


def quota_decide(*, team_id, start, end, gpus, borrow, actor, borrowed=False, exclude=(), quota=None):
    """Inside the booking's transaction: lock the team's quota row (unless `quota`, read under the
    lock already, is given) and decide. `borrow`: book over the quota as borrowed time rather than be
    refused; `borrowed`: it is borrowed time already (a borrowed booking moved: the borrow limit
    only). `exclude`: bookings whose time does not count (one being moved: its old window). Staff
    may pass any limit (the decision's `over` says which, for the audit). Raises QuotaExceeded."""
    if quota is None:
        quota = lock_team_quota(team_id, start, end, exclude=exclude)
    if quota is None:
        return QuotaDecision(borrowed=borrowed)
    staff = actor is not None and actor.is_staff
    if not borrowed:
        excess = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=False)
        if excess is None:
            return WITHIN
        if not borrow:
            if staff:
                return QuotaDecision(over=excess)
            raise QuotaExceeded(excess)
    over_borrow = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=True)
    if over_borrow is not None and not staff:
        raise QuotaExceeded(over_borrow)
    return QuotaDecision(borrowed=True, over=over_borrow)


def quota_fits(*, team_id, start, end, gpus, borrowed=False, may_borrow=False, exclude=()):
    """For the scheduler's own bookings (a waitlisted request confirmed, a preempted booking rebooked
    or moved), under the quota row's lock: whether [start, end) fits the team's quota in quota
    (False) or as borrowed time (True), or not at all (None). `borrowed`: it must stay borrowed (a
    borrowed booking's rebooking); `may_borrow`: it may become borrowed when over the quota;
    `exclude`: bookings whose time does not count (one being moved, rebookings about to be cancelled)."""
    quota = lock_team_quota(team_id, start, end, exclude=exclude)
    if quota is None:
        return borrowed
    if not borrowed and policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=False) is None:
        return False
    if (borrowed or may_borrow) and policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=True) is None:
        return True
    return None


QUOTA_FIELDS = ("gpu_hours_per_week", "max_gpus", "weight", "borrow_gpu_hours_per_week")


def team_quota_set(*, team, actor, reason="", **limits):
    """Set (or with every limit None and weight 1, keep empty) a team's quota; audited as quota_change."""
    with service_transaction():
        quota = TeamQuota.objects.select_for_update().filter(team=team).first()
        before = {field: getattr(quota, field) for field in QUOTA_FIELDS} if quota else None
        quota = quota or TeamQuota(team=team)
        for field in QUOTA_FIELDS:
            if field in limits:
                setattr(quota, field, limits[field])
        quota.full_clean()
        quota.save()
        after = {field: getattr(quota, field) for field in QUOTA_FIELDS}
        if before != after:
            audit_record(
                action=AuditEntry.Action.QUOTA_CHANGE, actor=actor, target=f"team:{team.pk}",
                reason=reason or f"Quota of team {team.slug} changed.", before=before, after=after,
            )
    return quota


def team_quota_remove(*, team, actor, reason=""):
    """Remove a team's quota: the team is unlimited again. Audited as quota_change."""
    with service_transaction():
        quota = TeamQuota.objects.select_for_update().filter(team=team).first()
        if quota is None:
            return
        before = {field: getattr(quota, field) for field in QUOTA_FIELDS}
        quota.delete()
        audit_record(
            action=AuditEntry.Action.QUOTA_CHANGE, actor=actor, target=f"team:{team.pk}",
            reason=reason or f"Quota of team {team.slug} removed: unlimited.", before=before, after=None,
        )
