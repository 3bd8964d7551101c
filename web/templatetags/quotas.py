"""How the pages word fair sharing: what borrowed time means, which limit a booking passes and by how
much, how full a team's week is. The rules themselves are reservations.policy's."""

from django import template
from django.conf import settings
from django.utils import dateformat, timezone

from reservations import policy

register = template.Library()


@register.simple_tag
def borrowed_terms():
    """What borrowed time means for its booker, in the words every page uses: the calendar's details,
    the booking form, a booking's page and list."""
    minutes = settings.PREEMPTION_NOTICE_MINUTES
    notice = "1 minute's" if minutes == 1 else f"{minutes:g} minutes'"
    return f"may be reclaimed by a team within its quota, with {notice} notice"


@register.simple_tag
def quota_excess(excess):
    """The limit a policy.QuotaExcess names and how far a booking goes past it, its times in the
    viewer's zone: "80 GPU-h in week 2030-W02: 76 booked, this adds 8 (4 over)". (Its describe() is
    the API's sentence, in UTC.)"""
    over = max(excess.used + excess.requested - excess.allowed, 0)
    if excess.limit == "max_gpus":
        said = (
            f"at most {excess.allowed} GPUs at once: it holds {excess.used:g} at {_moment(excess.at)}, "
            f"this adds {excess.requested:g} ({over:g} over)"
        )
        return said + (f"; GPUs free up from {_moment(excess.frees_at)}" if excess.frees_at else "")
    kind = "borrowed GPU-h" if excess.limit == "borrow_gpu_hours_per_week" else "GPU-h"
    return (
        f"{excess.allowed} {kind} in week {policy.week_label(excess.week)}: {_hours(excess.used)} booked, "
        f"this adds {_hours(excess.requested)} ({_hours(over)} over)"
    )


def _hours(value):
    return f"{round(value, 1):g}"


def _moment(moment):
    return dateformat.format(timezone.localtime(moment), "D j M H:i")


@register.filter
def percent_of(used, limit):
    """`used` as a whole percentage of `limit`, at most 100 (a bar's width)."""
    if not limit:
        return 0
    return min(round(100 * used / limit), 100)
