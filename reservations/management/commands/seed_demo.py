"""A demo cluster to click around in: 2 nodes x 4 GPUs, 3 teams, users with tokens, a week of bookings,
fair sharing at work (team quotas and a borrowed booking), and a recurring booking.

Safe to run again: existing rows are kept, and bookings are only added where the GPUs are free.
"""

import math
import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations import policy, selectors, services
from reservations.errors import BookingConflict, BookingError
from reservations.models import GPU, Membership, Node, Reservation, Team
from reservations.services import Device

PASSWORD = "demo-password"
TEAMS = [("Vision", "vision", "#4e79a7"), ("Language", "nlp", "#f28e2b"), ("Platform", "platform", "#59a14f")]
# username, team slug, team role, may book high priority, staff
USERS = [
    ("alice", "vision", Membership.Role.ADMIN, True, False),
    ("bob", "vision", Membership.Role.MEMBER, False, False),
    ("carol", "nlp", Membership.Role.ADMIN, False, False),
    ("dave", "nlp", Membership.Role.MEMBER, False, False),
    ("erin", "platform", Membership.Role.MEMBER, False, False),
    ("ci-bot", "platform", Membership.Role.MEMBER, True, False),
    ("admin", "platform", Membership.Role.ADMIN, True, True),
]
TITLES = ["YOLO fine-tune", "ablation sweep", "baseline rerun", "nightly eval", "data-aug study", "distillation"]
# vision's weekly GPU-hours are set this many above what it has booked, so that a newcomer sees it
# near its limit (a selection of 4 GPUs for 2 slots, 16 GPU-hours, goes over) while README's API
# walk-through still fits (bob's and alice's bookings there take 8).
VISION_ROOM = 10
# Never less: tests/test_every_url.py books 22 GPU-hours for bob in a week the demo leaves empty.
VISION_MIN_HOURS = 24


@dataclass(frozen=True)
class BorrowedWindow:
    """Where the demo's borrowed booking goes."""

    gpus: list
    start: datetime
    slots: int


class Command(BaseCommand):
    help = "Create a demo cluster with teams, users, API tokens and a week of bookings."

    def handle(self, *args, **options):
        User = get_user_model()
        for n in (1, 2):
            services.node_register(
                hostname=f"node{n}",
                devices=[Device(index=i, model="NVIDIA A100-SXM4-80GB", memory_mb=81920, uuid=f"GPU-demo-{n}-{i}") for i in range(4)],
            )
        # Demo nodes have no worker: bookable, but a job booked there waits for a node that never comes.
        Node.objects.filter(hostname__in=["node1", "node2"]).update(online=False)
        with transaction.atomic():
            teams = {}
            for name, slug, colour in TEAMS:
                teams[slug], _ = Team.objects.get_or_create(slug=slug, defaults={"name": name, "colour": colour})
            high = Permission.objects.get(codename="book_high_priority")
            users = {}
            for username, slug, role, may_high, staff in USERS:
                user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
                if created:
                    user.set_password(PASSWORD)
                user.is_staff = user.is_superuser = staff
                user.save()
                if may_high:
                    user.user_permissions.add(high)
                Membership.objects.get_or_create(team=teams[slug], user=user, defaults={"role": role})
                users[username] = user
        booked = self._bookings(users)
        self.stdout.write(self.style.SUCCESS(f"Demo cluster ready: 2 nodes x 4 GPUs, {booked} new bookings."))
        if booked:
            self.stdout.write(self._fair_sharing(users, timezone.now()))
            self.stdout.write(self._series(users["erin"], timezone.now()))
        self.stdout.write(
            f"Every demo user signs in to the calendar with the password {PASSWORD!r} (admin also to /admin/)."
            " API tokens (send 'Authorization: Token <key>'):"
        )
        for username, user in users.items():
            token, _ = Token.objects.get_or_create(user=user)
            self.stdout.write(f"  {username:8} {token.key}")

    def _bookings(self, users):
        if Reservation.objects.exists():
            return 0
        rng = random.Random(7)
        now = timezone.now()
        gpu_ids = list(GPU.objects.filter(node__hostname__in=["node1", "node2"]).values_list("id", flat=True))
        first = policy.ceil_to_slot(now)
        slots_in_week = int(timedelta(days=7) / policy.slot_length())
        booked = 0
        bookers = [u for name, u in users.items() if name != "admin"]
        for _ in range(60):
            start = first + rng.randrange(slots_in_week) * policy.slot_length()
            user = rng.choice(bookers)
            count = rng.choice([1, 1, 2, 4])
            node_gpus = rng.choice([gpu_ids[:4], gpu_ids[4:]])
            offset = rng.randrange(0, 5 - count)
            priority = "high" if user.has_perm("reservations.book_high_priority") and rng.random() < 0.3 else rng.choice(["normal", "low"])
            try:
                services.reservation_create(
                    user=user, gpu_ids=node_gpus[offset:offset + count], start=start,
                    slots=rng.choice([1, 1, 2, 3]), priority=priority, title=rng.choice(TITLES), now=now,
                )
                booked += 1
            except BookingConflict:
                continue
        return booked

    def _fair_sharing(self, users, now):
        """Quotas for a newcomer to see at work: vision (alice, bob) a few GPU-hours short of its
        weekly limit, with a borrowed booking of bob's over it; nlp with room; platform without a
        quota (unlimited). Set after the week of bookings, which were booked within no quota."""
        vision, nlp = Team.objects.get(slug="vision"), Team.objects.get(slug="nlp")
        admin = users["admin"]
        nlp_now = selectors.team_standings([nlp], now)[0]
        services.team_quota_set(
            team=nlp, actor=admin, reason="Demo quota: room to spare.",
            gpu_hours_per_week=max(math.ceil((nlp_now.booked_hours + 60) / 10) * 10, 80),
            max_gpus=max(6, nlp_now.gpus_now), weight=2,
        )
        # The borrowed booking starts a few hours ahead (the hours just ahead stay as the week of
        # bookings left them), this quota week, or the next where too little of this one is left.
        after = policy.ceil_to_slot(now) + 2 * policy.slot_length()
        for week_start in (policy.week_start(after), policy.week_start(after) + timedelta(days=7)):
            hours, window = self._vision_near_its_limit(vision, max(after, week_start), now)
            if window is not None:
                break
        services.team_quota_set(
            team=vision, actor=admin, reason="Demo quota: near its weekly limit.",
            gpu_hours_per_week=hours, borrow_gpu_hours_per_week=48,
        )
        said = f"Quotas: vision {hours} GPU-h a week (borrowing allowed), nlp with room, platform unlimited."
        if window is None:
            return said
        try:
            borrowed = services.reservation_create(
                user=users["bob"], gpu_ids=window.gpus, start=window.start, slots=window.slots,
                title="hyperparameter sweep", borrow=True, now=now,
            )
        except BookingConflict:  # taken since the search: the demo does without it
            return said
        return f"{said} Booking #{borrowed.pk} of bob's is borrowed time over vision's quota."

    def _series(self, erin, now):
        """A recurring booking to see on the calendar (marked ↻) and on its page: erin's weekly
        evaluation, one GPU every Monday at 08:00 UTC for four weeks, the taken ones skipped."""
        tomorrow = (now + timedelta(days=1)).date()
        monday = tomorrow + timedelta(days=-tomorrow.weekday() % 7)
        start = policy.ceil_to_slot(datetime.combine(monday, time(8), tzinfo=dt_timezone.utc))
        gpu = GPU.objects.get(node__hostname="node2", index=3)
        try:
            result = services.series_create(
                user=erin, start=start, slots=1, rule="FREQ=WEEKLY;COUNT=4", gpu_ids=[gpu.pk],
                title="weekly evaluation", on_conflict="skip", now=now,
            )
        except BookingError as refused:  # a horizon or slot too short for it (settings): no series
            return f"No demo series: {refused.message}"
        return f"Series #{result.series.pk} of erin's: a weekly evaluation, {len(result.of('booked'))} of 4 Mondays booked."

    def _vision_near_its_limit(self, vision, after, now):
        """vision's weekly GPU-hours for the quota week of `after` (VISION_ROOM above what it booked
        there), and a free window in that week for 2 GPUs over the room left (as borrowed time), or
        None."""
        slot = policy.slot_length()
        week_end = policy.week_start(after) + timedelta(days=7)
        booked = selectors.team_standings([vision], after)[0].booked_hours
        hours = max(math.ceil((booked + VISION_ROOM) / 4) * 4, VISION_MIN_HOURS)
        slots = math.floor((hours - booked) / (2 * slot.total_seconds() / 3600)) + 1
        windows = selectors.find_windows(
            slots=slots, after=after, now=now, gpu_count=2, latest_start=week_end - slots * slot, limit=1
        )
        return hours, (BorrowedWindow(windows[0].gpus, windows[0].start, slots) if windows else None)
