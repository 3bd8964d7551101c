from datetime import timezone as dt_timezone

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import serializers

from trainer.spec import JobSpecSerializer

from .. import policy
from ..models import GPU, AuditEntry, Node, Notice, Reservation


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an offset or Z in; UTC with Z out. A naive datetime is an error, not a guess."""

    default_error_messages = {"naive": "Give the time zone (an offset or Z), e.g. 2030-01-01T10:00:00Z."}

    def __init__(self, **kwargs):
        super().__init__(default_timezone=dt_timezone.utc, **kwargs)

    def enforce_timezone(self, value):
        if value.tzinfo is None:
            self.fail("naive")
        return value.astimezone(dt_timezone.utc)


class StartField(AwareDateTimeField):
    """A slot-boundary datetime, or "earliest" for the nearest free window."""

    def to_internal_value(self, value):
        if value == policy.EARLIEST:
            return value
        return super().to_internal_value(value)


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know, so a typo ("gpu_cnt") is a 400 rather than silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class ReservationCreateSerializer(StrictSerializer):
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
    job = JobSpecSerializer(required=False)

    def validate(self, attrs):
        if ("gpus" in attrs) == ("gpu_count" in attrs):
            raise serializers.ValidationError({"gpus": ["Give exactly one of gpus or gpu_count."]})
        return attrs


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reservation = serializers.IntegerField(source="reservation_id")
    status = serializers.CharField()
    reason = serializers.CharField()
    epoch = serializers.IntegerField()
    epochs = serializers.IntegerField()
    metrics = serializers.DictField()
    checkpoint = serializers.CharField()
    resumed_from = serializers.IntegerField(source="resumed_from_id", allow_null=True)
    start_epoch = serializers.IntegerField(allow_null=True)
    batches_lost = serializers.IntegerField(allow_null=True)
    spec = serializers.DictField()
    started_at = AwareDateTimeField(allow_null=True)
    ended_at = AwareDateTimeField(allow_null=True)


class ReservationSerializer(serializers.Serializer):
    # A plain Serializer: it is on every booking's response, and ModelSerializer rebuilds its fields
    # from the model on each instantiation.
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
    status = serializers.ChoiceField(choices=Reservation.Status.choices, read_only=True)
    created = AwareDateTimeField(read_only=True)
    preempted_by = serializers.IntegerField(source="preempted_by_id", read_only=True, allow_null=True)
    reclaim_at = AwareDateTimeField(read_only=True, allow_null=True)
    auto_rebook = serializers.BooleanField(read_only=True)
    rebook_of = serializers.IntegerField(source="rebook_of_id", read_only=True, allow_null=True)
    job = serializers.SerializerMethodField()

    def get_gpus(self, obj) -> list[int]:
        return [a.gpu_id for a in obj.allocation_list]

    def get_gpu_names(self, obj) -> list[str]:
        return [a.gpu.name for a in obj.allocation_list]

    def get_job(self, obj) -> dict | None:
        try:
            job = obj.job
        except ObjectDoesNotExist:
            return None
        return JobSerializer(job).data


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
