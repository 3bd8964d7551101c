"""Writes. Every change to a reservation goes through a function here, inside one transaction of its
own that also writes its audit entry. Locks are taken in the one order that locks.py documents.

The package follows the seams of the work: locks, audit, notices, records (writes the flows share),
booking, preemption, changes (cancel, transfer, edit, move, release), waitlist, clock, inventory,
health (GPU readings, alerts, taking a failing GPU out of booking),
directory (sign-in groups), tokens (API tokens), quota (fair sharing: a booking against its team's
quota, and quota changes), series (recurring bookings: their occurrences booked, beat's
roll-forward, changes to a series). Callers use the names below.
"""

from .audit import audit_partitions_ensure, audit_record, snapshot
from .booking import reservation_create
from .changes import (
    reservation_cancel,
    reservation_edit,
    reservation_move,
    reservation_release_early,
    reservation_transfer,
    reservation_update,
)
from .clock import idempotency_prune, reservations_advance
from .directory import DirectoryTeam, user_directory_sync
from .health import gpu_readings_record, gpu_return_to_service
from .inventory import Device, node_register
from .notices import (
    notice_email,
    notice_email_gave_up,
    notice_payload,
    notice_send,
    notice_webhook_gave_up,
    notice_webhook_post,
    notices_mark_read,
    notices_prune,
)
from .preemption import preemption_withdraw, reservation_reclaim, reservations_reclaim_due
from .quota import QUOTA_FIELDS, team_quota_remove, team_quota_set
from .series import SeriesResult, series_cancel, series_change, series_create, series_extend, series_transfer
from .tokens import api_token_for, api_token_rotate
from .waitlist import waitlist_promote

__all__ = [
    "QUOTA_FIELDS",
    "Device",
    "DirectoryTeam",
    "api_token_for",
    "api_token_rotate",
    "audit_partitions_ensure",
    "audit_record",
    "gpu_readings_record",
    "gpu_return_to_service",
    "idempotency_prune",
    "node_register",
    "notice_email",
    "notice_email_gave_up",
    "notice_payload",
    "notice_send",
    "notice_webhook_gave_up",
    "notice_webhook_post",
    "notices_mark_read",
    "notices_prune",
    "preemption_withdraw",
    "reservation_cancel",
    "reservation_create",
    "reservation_edit",
    "reservation_move",
    "reservation_release_early",
    "reservation_reclaim",
    "reservation_transfer",
    "reservation_update",
    "reservations_advance",
    "reservations_reclaim_due",
    "SeriesResult",
    "series_cancel",
    "series_change",
    "series_create",
    "series_extend",
    "series_transfer",
    "snapshot",
    "team_quota_remove",
    "team_quota_set",
    "user_directory_sync",
    "waitlist_promote",
]
