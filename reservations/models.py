import math

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from .directory_names import normal_dn


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    colour = models.CharField(
        max_length=7,
        default="#4e79a7",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a #rrggbb colour.")],
    )
    webhook_url = models.URLField(
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])], help_text="Notices about the team's bookings are POSTed here as JSON (optional)."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams", blank=True
    )
    # Set: the company directory decides who is in the team (at each member's sign-in); empty: the
    # team and its members are managed by hand, and no sign-in ever changes them.
    directory_dn = models.CharField(
        "directory group", max_length=1000, blank=True, default="",
        help_text="The company directory group (LDAP DN, e.g. cn=vision,ou=teams,dc=example,dc=com) whose "
        "members are this team's members; compared ignoring case. Empty for a team managed by hand.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                Lower("directory_dn"), condition=~Q(directory_dn=""), name="team_directory_dn_unique"
            )
        ]

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        try:
            self.directory_dn = normal_dn(self.directory_dn) if self.directory_dn else ""
        except ValueError:
            raise ValidationError(
                {"directory_dn": "Enter an LDAP DN, like cn=vision,ou=teams,dc=example,dc=com, or leave it empty."}
            ) from None

    def save(self, *args, **kwargs):
        # One spelling, whoever saves (the admin, the directory sync, a shell): the sync finds a team
        # by its group's DN, which an admin may have typed with other spacing or case. A string
        # that is no DN raises ValueError here (clean() refuses it in forms first).
        if self.directory_dn:
            self.directory_dn = normal_dn(self.directory_dn)
        super().save(*args, **kwargs)


class TeamQuota(models.Model):
    """A team's share of the cluster (fair sharing). A team without one is unlimited. Each limit left
    empty is no limit of that kind. The booking services lock this row (locks.py) while they check a
    booking of the team against it, so two bookings of one team cannot both pass a limit only one fits."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, primary_key=True, related_name="quota")
    gpu_hours_per_week = models.PositiveIntegerField(
        "GPU-hours per week", null=True, blank=True,
        help_text="Booked GPUs x hours of the team's in-quota bookings, counted in the week each hour falls in. Empty: no limit.",
    )
    max_gpus = models.PositiveSmallIntegerField(
        "max GPUs at once", null=True, blank=True,
        help_text="The most GPUs the team's in-quota bookings may hold at any moment. Empty: no limit.",
    )
    weight = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)],
        help_text="Fair-share weight: the waitlist serves the team with the least recent use per weight first.",
    )
    borrow_gpu_hours_per_week = models.PositiveIntegerField(
        "borrow limit (GPU-hours per week)", null=True, blank=True,
        help_text="The most GPU-hours per week the team may book over its quota as borrowed time. Empty: idle GPUs may be borrowed without limit.",
    )

    class Meta:
        verbose_name = "team quota"

    def __str__(self):
        return f"quota of {self.team}"


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Team admin"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique")]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


class Node(models.Model):
    hostname = models.CharField(max_length=253, unique=True)
    online = models.BooleanField(default=False)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self):
        return self.hostname


class GPU(models.Model):
    # The model name of the CPU "devices" a machine without NVIDIA GPUs offers (trainer.hardware).
    CPU_MODEL = "cpu"

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=100)
    memory_mb = models.PositiveIntegerField(default=0)
    uuid = models.CharField(max_length=100, blank=True)
    healthy = models.BooleanField(default=True)

    class Meta:
        ordering = ["node__hostname", "index"]
        verbose_name = "GPU"
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpu_unique_index")]

    def __str__(self):
        return self.name

    @property
    def name(self):
        return f"{self.node.hostname}/gpu{self.index}"

    @property
    def is_cpu(self):
        return self.model == self.CPU_MODEL


class GpuReading(models.Model):
    """A GPU's latest telemetry, sent by its node's agent with each heartbeat, and where its health
    check stands (services.health). Readings a device cannot give are empty."""

    gpu = models.OneToOneField(GPU, on_delete=models.CASCADE, primary_key=True, related_name="reading")
    at = models.DateTimeField()
    temperature_c = models.FloatField(null=True, blank=True)
    memory_used_mb = models.PositiveIntegerField(null=True, blank=True, help_text="MiB")
    memory_free_mb = models.PositiveIntegerField(null=True, blank=True, help_text="MiB")
    utilization_pct = models.FloatField(null=True, blank=True)
    power_w = models.FloatField(null=True, blank=True)
    ecc_errors = models.BigIntegerField(null=True, blank=True, help_text="Volatile uncorrected ECC errors.")
    xid_errors = models.BigIntegerField(null=True, blank=True, help_text="Critical XID events since the agent started.")
    # Set while the health check has the GPU out of service; clean readings in a row since then.
    failed_since = models.DateTimeField(null=True, blank=True)
    failed_reason = models.TextField(blank=True)
    clean_readings = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.gpu_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class GpuAlert(models.Model):
    """One alert episode: opened when a reading crosses its threshold, ended when readings are back
    under it. At most one open episode per GPU and kind, so a GPU that stays hot alerts once."""

    class Kind(models.TextChoices):
        TEMPERATURE = "temperature", "Temperature"
        MEMORY = "memory", "Memory"
        ECC = "ecc", "ECC errors"
        XID = "xid", "XID errors"

    gpu = models.ForeignKey(GPU, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    started = models.DateTimeField()
    ended = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="The reading that opened it.")
    message = models.TextField()

    class Meta:
        ordering = ["-started", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["gpu", "kind"], condition=Q(ended=None), name="gpu_alert_one_open")
        ]

    def __str__(self):
        return f"{self.kind} on {self.gpu_id} from {self.started:%Y-%m-%d %H:%M}"


class Reservation(models.Model):
    class Priority(models.TextChoices):
        HIGH = "high", "High"
        NORMAL = "normal", "Normal"
        LOW = "low", "Low"

    class Status(models.TextChoices):
        WAITLISTED = "waitlisted", "Waitlisted"
        CONFIRMED = "confirmed", "Confirmed"
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        PREEMPTED = "preempted", "Preempted"

    # Statuses a person may still cancel, transfer or move.
    OPEN_STATUSES = (Status.WAITLISTED, Status.CONFIRMED, Status.ACTIVE)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reservations"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="reservations")
    title = models.CharField(max_length=200, blank=True)
    start = models.DateTimeField()
    end = models.DateTimeField()
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    preemptible = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CONFIRMED)
    preempted_by = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="preempted",
        help_text="The booking that took (or is about to take) this one's GPUs.",
    )
    reclaim_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When a preempted booking's GPUs are (or were) taken back and its job stopped.",
    )
    end_before_preemption = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Where a booking cut by a preemption ended before, to give the time back if the preemptor is cancelled.",
    )
    # Fair sharing: booked over the team's quota on idle GPUs. Always preemptible, never high, and
    # reclaimed by any in-quota booking (policy.may_preempt). On a waitlisted request: it may be
    # confirmed as borrowed when its window frees and the team is then over quota.
    borrowed = models.BooleanField(default=False)
    # When a booking was cancelled: a cancelled booking that had begun counts against its team's
    # quota up to this moment (policy.counted_end).
    cancelled_at = models.DateTimeField(null=True, blank=True, editable=False)
    auto_rebook = models.BooleanField(
        default=True, help_text="If preempted, book the unused part again and resume the job from its checkpoint."
    )
    rebook_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="rebooks",
        help_text="The preempted booking this one continues.",
    )
    # What was asked for: a waitlisted gpu_count request holds no GPUs until it is promoted.
    gpu_count = models.PositiveSmallIntegerField()
    allow_multi_node = models.BooleanField(default=False)
    gpus = models.ManyToManyField(GPU, through="Allocation", related_name="reservations")
    # An occurrence of a recurring booking: its series, and the start its rule gave it (UTC, on the
    # slot grid; the booking may have moved since). One booking per occurrence: the constraint below
    # makes a second beat's (or a retry's) booking of it fail.
    series = models.ForeignKey(
        "Series", on_delete=models.PROTECT, null=True, blank=True, related_name="occurrences"
    )
    occurrence = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start", "id"]
        permissions = [("book_high_priority", "Can book high-priority reservations")]
        constraints = [
            models.CheckConstraint(condition=Q(start__lt=models.F("end")), name="reservation_start_before_end"),
            models.UniqueConstraint(
                fields=["series", "occurrence"], condition=Q(series__isnull=False, rebook_of=None),
                name="reservation_one_per_occurrence",
            ),
            # An occurrence names its series and its start, both: one without its start would
            # escape the constraint above.
            models.CheckConstraint(
                condition=Q(series__isnull=True, occurrence__isnull=True) | Q(series__isnull=False, occurrence__isnull=False),
                name="reservation_occurrence_of_series",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "start"], name="reservation_status_start"),
            models.Index(fields=["end"], name="reservation_end"),
            # A team's bookings in a week (quotas, fair share): bounded by start (policy.longest_booking).
            models.Index(fields=["team", "start"], name="reservation_team_start"),
            # A person's bookings, in start order (My bookings, the API's ?user=), without reading them all.
            models.Index(fields=["user", "start"], name="reservation_user_start"),
            # Every booking in start order, a page at a time (the admin's list, the API's ?gpu=).
            models.Index(fields=["start", "id"], name="reservation_start_id"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.title or 'reservation'} ({self.status})"

    @property
    def slots(self):
        """The slots it touches: a booking that started "now" has a part of its first slot."""
        return math.ceil((self.end - self.start).total_seconds() / (settings.SLOT_MINUTES * 60))

    @property
    def allocation_list(self):
        """Its allocations in GPU order, each with its GPU and node loaded.

        Filled without a query by selectors.reservation_queryset() (a to_attr prefetch) or by the
        service that just wrote them; queried otherwise.
        """
        held = getattr(self, "held_allocations", None)
        if held is None:
            held = self.held_allocations = list(self.allocations.select_related("gpu__node").order_by("gpu_id"))
        return held


# A series with occurrences still to book (beat's roll-forward: services.series_extend).
GOING = Q(cancelled_at=None) & (Q(booked_through=None) | Q(booked_through__lt=models.F("last_start")))


class Series(models.Model):
    """A recurring booking: one request, booked as ordinary bookings (its occurrences, each a
    Reservation with `series` set) at the times its rule gives (reservations.recurrence). Those
    within the booking horizon are booked when it is made, later ones by beat as the horizon moves
    (services.series). What each occurrence is booked with is kept here, for the ones to come."""

    class OnConflict(models.TextChoices):
        FAIL = "fail", "Book nothing (409) when any occurrence is taken"
        SKIP = "skip", "Book the free occurrences, skip the taken ones"
        WAITLIST = "waitlist", "Taken occurrences wait on the waitlist"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="series")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="series")
    title = models.CharField(max_length=200, blank=True)
    # What each occurrence books: the GPUs named (a list of ids) or a number of them.
    gpu_ids = models.JSONField(null=True, blank=True)
    gpu_count = models.PositiveSmallIntegerField()
    allow_multi_node = models.BooleanField(default=False)
    slots = models.PositiveSmallIntegerField()
    priority = models.CharField(max_length=10, choices=Reservation.Priority.choices, default=Reservation.Priority.NORMAL)
    preemptible = models.BooleanField(null=True, blank=True, help_text="Empty: as the priority decides for each booking.")
    auto_rebook = models.BooleanField(default=True)
    borrow = models.BooleanField(default=False, help_text="An occurrence over the team's quota is booked as borrowed time.")
    # The work each occurrence carries ({"job": spec} or {"serve": spec}); a job's
    # "resume_from": "previous" resumes from the previous occurrence's checkpoint.
    work = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # The recurrence: an RFC 5545 RRULE (the subset recurrence.py allows), its first start (UTC), and
    # the IANA zone whose wall-clock time the occurrences keep.
    rule = models.CharField(max_length=300)
    first_start = models.DateTimeField()
    time_zone = models.CharField(max_length=64, default="UTC")
    on_conflict = models.CharField(max_length=10, choices=OnConflict.choices, default=OnConflict.FAIL)
    # The rule's last occurrence, and how far beat has come: every occurrence starting at or before
    # booked_through has been booked, skipped or passed over as cancelled. Done when they meet.
    last_start = models.DateTimeField()
    booked_through = models.DateTimeField(null=True, blank=True)
    # Occurrences from here on are cancelled ("this and the following"); None: none are.
    ends_before = models.DateTimeField(null=True, blank=True)
    # Occurrences cancelled before they were booked (ISO UTC starts: the feed's EXDATEs), and those
    # that could not be booked ([{"at": ISO UTC start, "reason": why}]).
    cancelled_occurrences = models.JSONField(default=list, blank=True)
    skipped = models.JSONField(default=list, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "series"
        constraints = [
            models.CheckConstraint(condition=Q(first_start__lte=models.F("last_start")), name="series_first_before_last"),
            models.CheckConstraint(condition=Q(slots__gte=1) & Q(gpu_count__gte=1), name="series_books_something"),
            models.CheckConstraint(condition=Q(on_conflict__in=["fail", "skip", "waitlist"]), name="series_on_conflict_known"),
        ]
        indexes = [
            # Beat's roll-forward reads only the series with occurrences still to book: years of
            # finished ones cost it nothing.
            models.Index(fields=["id"], condition=GOING, name="series_going"),
            # A person's or a team's iCal feed reads their series booked through a recent time, not
            # every series they ever had (selectors.calendar_feed_series).
            models.Index(fields=["user", "booked_through"], name="series_user_booked_through"),
            models.Index(fields=["team", "booked_through"], name="series_team_booked_through"),
        ]

    def __str__(self):
        return f"series #{self.pk} {self.title or ''}".rstrip()


class Allocation(models.Model):
    """One GPU held by one reservation over the reservation's time range.

    The range and liveness are copied from the reservation so that PostgreSQL can enforce "no two
    live bookings overlap on one GPU" with an exclusion constraint on this one table (see migration
    0002); services keep the copy in step in the same transaction.
    """

    # No single-column indexes: allocation_unique_gpu leads with reservation and allocation_gpu_range
    # with gpu, and every booking writes these rows.
    reservation = models.ForeignKey(
        Reservation, on_delete=models.CASCADE, related_name="allocations", db_index=False
    )
    gpu = models.ForeignKey(GPU, on_delete=models.PROTECT, related_name="allocations", db_index=False)
    start = models.DateTimeField()
    end = models.DateTimeField()
    # True while the booking holds (or held) this time: confirmed, active, completed, or preempted up
    # to its reclaim. False for a waitlisted request's wish and a cancelled booking.
    live = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservation", "gpu"], name="allocation_unique_gpu"),
            models.CheckConstraint(condition=Q(start__lt=models.F("end")), name="allocation_start_before_end"),
        ]
        indexes = [models.Index(fields=["gpu", "start", "end"], name="allocation_gpu_range")]

    def __str__(self):
        return f"{self.gpu_id} {self.start:%Y-%m-%d %H:%M}-{self.end:%H:%M}"


class AuditEntry(models.Model):
    """Append-only record of every change. PostgreSQL also refuses UPDATE and DELETE (migration 0002),
    and keeps it partitioned by month of `created` (0017), the append-only trigger on every partition."""

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        WAITLIST = "waitlist", "Waitlisted"
        PROMOTE = "promote", "Promoted from waitlist"
        EXPIRE = "expire", "Waitlist expired"
        CANCEL = "cancel", "Cancelled"
        TRANSFER = "transfer", "Transferred"
        UPDATE = "update", "Edited"
        MOVE = "move", "Moved"
        ACTIVATE = "activate", "Started"
        COMPLETE = "complete", "Completed"
        RELEASE = "release", "Released early"
        DELETE = "delete", "Deleted"
        PREEMPT = "preempt", "Preemption scheduled"
        RECLAIM = "reclaim", "Preempted (GPUs reclaimed)"
        REBOOK = "rebook", "Rebooked after preemption"
        NOTICE = "notice", "Notice sent"
        WITHDRAW = "withdraw", "Preemption withdrawn"
        GPU_ALERT = "gpu_alert", "GPU alert"
        GPU_ALERT_END = "gpu_alert_end", "GPU alert cleared"
        GPU_UNHEALTHY = "gpu_unhealthy", "GPU taken out of service"
        GPU_HEALTHY = "gpu_healthy", "GPU back in service"
        MODEL_REGISTER = "model_register", "Model version registered"
        MODEL_DELETE = "model_delete", "Model or model version deleted"
        BORROW = "borrow", "Booked as borrowed (over quota)"
        QUOTA_CHANGE = "quota_change", "Team quota changed"
        SERIES_CREATE = "series_create", "Series created"
        SERIES_CHANGE = "series_change", "Series changed"
        SERIES_CANCEL = "series_cancel", "Series cancelled (whole or part)"

    created = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_entries",
        help_text="Empty when the scheduler itself acted.",
    )
    action = models.CharField(max_length=20, choices=Action.choices, db_index=True)
    reservation = models.ForeignKey(
        Reservation, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_entries"
    )
    # What changed when it is not a reservation: "gpu:3", "team:7", "membership:12".
    target = models.CharField(max_length=100, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.action} #{self.reservation_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit entries are append-only.")


class Notice(models.Model):
    class Kind(models.TextChoices):
        WAITLIST_CONFIRMED = "waitlist_confirmed", "Waitlist confirmed"
        WAITLIST_EXPIRED = "waitlist_expired", "Waitlist expired"
        CANCELLED = "cancelled", "Booking cancelled"
        TRANSFERRED = "transferred", "Booking transferred"
        MOVED = "moved", "Booking moved"
        RELEASED = "released", "Unused slots released"
        SLOT_ENDING = "slot_ending", "Slot ending soon"
        PREEMPTION_WARNING = "preemption_warning", "Preemption warning"
        PREEMPTED = "preempted", "Booking preempted"
        PREEMPTION_WITHDRAWN = "preemption_withdrawn", "Preemption withdrawn"
        NODE_OFFLINE = "node_offline", "Node offline"
        GPU_ALERT = "gpu_alert", "GPU alert"
        GPU_UNHEALTHY = "gpu_unhealthy", "GPU out of service"
        GPU_RECOVERED = "gpu_recovered", "GPU back in service"
        SERIES_SKIPPED = "series_skipped", "Series occurrence not booked"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    reservation = models.ForeignKey(
        Reservation, on_delete=models.SET_NULL, null=True, blank=True, related_name="notices"
    )
    message = models.TextField()
    # The facts behind the message, for programs (webhook and API): times, GPUs, bookings.
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)
    # Delivery outside the app, done by Celery after the notice is committed. A worker claims the
    # e-mail (email_claimed_at) before sending it, so that a task delivered twice sends it once.
    emailed_at = models.DateTimeField(null=True, blank=True)
    email_claimed_at = models.DateTimeField(null=True, blank=True)
    email_error = models.TextField(blank=True)
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    webhook_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # The unread-notices banner on every page reads only these: a person's read notices
            # (all but a few, after a year) are never scanned for it.
            models.Index(fields=["user", "-created"], condition=Q(read_at=None), name="notice_unread"),
        ]

    def __str__(self):
        return f"{self.kind} for {self.user}"


class IdempotencyRecord(models.Model):
    """The first successful response to a create carrying an Idempotency-Key, replayed on retry."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_key")]
