from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apibase.fields import AwareDateTimeField
from apibase.serializers import PlainFieldsMixin, StrictSerializer

from .. import jobs, policy, selectors
from ..errors import BookingError
from ..models import GPU, AuditEntry, Node, Notice, Reservation


@extend_schema_field(
    {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "string", "enum": [policy.EARLIEST, policy.NOW]}]}
)
class StartField(AwareDateTimeField):
    """A slot-boundary datetime; "earliest" for the nearest free window; "now" to start at once."""

    def to_internal_value(self, value):
        if value in (policy.EARLIEST, policy.NOW):
            return value
        return super().to_internal_value(value)


class ReservationCreateSerializer(PlainFieldsMixin, StrictSerializer):
    # PlainFieldsMixin: built for every booking (its fields are plain; the work kinds' serializers
    # that get_fields adds are built afresh for each instance).
    gpus = serializers.ListField(
        child=serializers.IntegerField(min_value=1), allow_empty=False, max_length=1024, required=False
    )
    gpu_count = serializers.IntegerField(min_value=1, max_value=1024, required=False)
    allow_multi_node = serializers.BooleanField(default=False)
    start = StartField()
    slots = serializers.IntegerField(min_value=1, max_value=10_000)
    priority = serializers.ChoiceField(choices=Reservation.Priority.choices, default=Reservation.Priority.NORMAL)
    preemptible = serializers.BooleanField(required=False, allow_null=True, default=None)
    team = serializers.SlugField(required=False, allow_blank=False)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    waitlist = serializers.BooleanField(default=False)
    auto_rebook = serializers.BooleanField(
        default=True, help_text="If preempted, rebook the unused part and resume the job from its checkpoint."
    )
    borrow = serializers.BooleanField(
        default=False,
        help_text="Over the team's quota, book the whole booking as borrowed time (preemptible, reclaimed with "
        "notice by a team within its quota) instead of a 409 quota_exceeded. Within the quota it books as usual.",
    )

    def get_fields(self):
        # The apps behind each kind of work validate it (`job`, `serve`: reservations.jobs); this
        # app does not know their fields.
        fields = super().get_fields()
        fields.update(jobs.work_kinds.serializer_fields())
        return fields

    def validate(self, attrs):
        try:
            policy.require_one_target(attrs.get("gpus"), attrs.get("gpu_count"))
            policy.require_one_kind_of_work({field: attrs.get(field) for field in jobs.work_kinds.kinds})
        except BookingError as exc:
            raise serializers.ValidationError(exc.as_dict()) from None
        return attrs


class ReservationSerializer(PlainFieldsMixin, serializers.Serializer):
    # A plain Serializer with PlainFieldsMixin: it is on every booking's response, ModelSerializer
    # rebuilds its fields from the model on each instantiation, and DRF deep-copies declared ones.
    id = serializers.IntegerField(read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)
    team = serializers.CharField(source="team.slug", read_only=True)
    title = serializers.CharField(read_only=True)
    gpus = serializers.SerializerMethodField()
    gpu_names = serializers.SerializerMethodField()
    start = AwareDateTimeField(read_only=True)
    end = AwareDateTimeField(read_only=True)
    slots = serializers.IntegerField(read_only=True)
    priority = serializers.ChoiceField(choices=Reservation.Priority.choices, read_only=True)
    preemptible = serializers.BooleanField(read_only=True)
    borrowed = serializers.BooleanField(
        read_only=True, help_text="Booked over the team's quota: may be reclaimed by a team within its quota."
    )
    status = serializers.ChoiceField(choices=Reservation.Status.choices, read_only=True)
    waitlist_position = serializers.SerializerMethodField()
    created = AwareDateTimeField(read_only=True)
    preempted_by = serializers.IntegerField(source="preempted_by_id", read_only=True, allow_null=True)
    reclaim_at = AwareDateTimeField(read_only=True, allow_null=True)
    auto_rebook = serializers.BooleanField(read_only=True)
    rebook_of = serializers.IntegerField(source="rebook_of_id", read_only=True, allow_null=True)
    series = serializers.IntegerField(
        source="series_id", read_only=True, allow_null=True, help_text="The recurring booking it is an occurrence of."
    )
    occurrence = AwareDateTimeField(
        read_only=True, allow_null=True, help_text="The start its series' rule gave it (it may have moved since)."
    )
    job = serializers.SerializerMethodField()
    serve = serializers.SerializerMethodField()

    def get_waitlist_position(self, obj) -> int | None:
        """How many waitlisted requests the waitlist tries before this one (0: next in line), in its
        fair-share order; null unless waitlisted."""
        if obj.status != Reservation.Status.WAITLISTED:
            return None
        root = self.root
        if not hasattr(root, "_waitlist"):  # once per response: a list shows many
            root._waitlist = {pk: index for index, pk in enumerate(selectors.waitlist_order(timezone.now()))}
        return root._waitlist.get(obj.pk)

    def get_gpus(self, obj) -> list[int]:
        return [a.gpu_id for a in obj.allocation_list]

    def get_gpu_names(self, obj) -> list[str]:
        return [a.gpu.name for a in obj.allocation_list]

    def get_job(self, obj) -> dict | None:
        """The booking's training job, for its team, its owner and staff only (policy.JobViewer);
        null for everyone else, and when it carries none."""
        return self._work(obj, "job")

    def get_serve(self, obj) -> dict | None:
        """What the booking serves and its replicas, seen as its job would be (policy.JobViewer)."""
        return self._work(obj, "serve")

    def _work(self, obj, field):
        work = jobs.work_kinds.render(obj, field)
        # Asked only of a booking that has work: most have none, and the viewer may cost a query.
        if work is None or not self._job_viewer().may_see(obj):
            return None
        return work

    def _job_viewer(self):
        return job_viewer(self)


def job_viewer(serializer):
    """The policy.JobViewer of a response: made once per response, not per row (a list shows many),
    for the request's user; without a request (nobody to show it to), no job details."""
    root = serializer.root
    if not hasattr(root, "_viewer"):
        request = serializer.context.get("request")
        root._viewer = policy.JobViewer(request.user) if request is not None else policy.NOBODY
    return root._viewer


class ReservationCreatedSerializer(ReservationSerializer):
    warnings = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="What the person booking should know at once, e.g. that the job's node is offline.",
    )


class ConflictSerializer(serializers.Serializer):
    """A conflicting booking, from one of its allocations."""

    id = serializers.IntegerField(source="reservation_id")
    gpu = serializers.IntegerField(source="gpu_id")
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    priority = serializers.CharField(source="reservation.priority")
    user = serializers.CharField(source="reservation.user.username")


class WindowSerializer(serializers.Serializer):
    gpus = serializers.ListField(child=serializers.IntegerField())
    start = AwareDateTimeField()
    end = AwareDateTimeField()


class CancelSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class MoveSerializer(StrictSerializer):
    start = AwareDateTimeField()
    slots = serializers.IntegerField(min_value=1, max_value=10_000)
    gpus = serializers.ListField(
        child=serializers.IntegerField(min_value=1), allow_empty=False, max_length=1024, required=False,
        help_text="Other GPUs to move to (as many as the booking holds); without it, the same GPUs.",
    )
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class TransferSerializer(StrictSerializer):
    to = serializers.CharField(max_length=150)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class AvailabilityQuerySerializer(StrictSerializer):
    gpu_count = serializers.IntegerField(min_value=1, max_value=1024, default=1)
    slots = serializers.IntegerField(min_value=1, max_value=10_000, default=1)
    after = AwareDateTimeField(required=False)
    gpu_model = serializers.CharField(max_length=100, required=False)
    allow_multi_node = serializers.BooleanField(default=False)


class GPUSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)

    class Meta:
        model = GPU
        fields = ["id", "name", "node", "index", "model", "memory_mb", "healthy"]


class NodeSerializer(serializers.ModelSerializer):
    gpus = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    last_heartbeat = AwareDateTimeField(read_only=True)

    class Meta:
        model = Node
        fields = ["id", "hostname", "online", "last_heartbeat", "gpus"]


class StatusSerializer(serializers.Serializer):
    gpu = serializers.IntegerField(source="gpu.id")
    name = serializers.CharField(source="gpu.name")
    current = ReservationSerializer(allow_null=True)
    upcoming = ReservationSerializer(many=True)


class NoticeSerializer(serializers.ModelSerializer):
    created = AwareDateTimeField(read_only=True)
    read_at = AwareDateTimeField(read_only=True)

    class Meta:
        model = Notice
        fields = ["id", "kind", "reservation", "message", "data", "created", "read_at"]


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True)
    created = AwareDateTimeField(read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "created", "actor", "action", "reservation", "target", "reason", "before", "after"]
