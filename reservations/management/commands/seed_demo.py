"""A demo cluster to click around in: 2 nodes x 4 GPUs, 3 teams, users with tokens, a week of bookings.

Safe to run again: existing rows are kept, and bookings are only added where the GPUs are free.
"""

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations import policy, services
from reservations.errors import BookingConflict
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
