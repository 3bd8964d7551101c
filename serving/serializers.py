"""How a serving booking and its replicas show in the API (inside the booking's `serve`)."""

from django.db.models import Prefetch, prefetch_related_objects
from rest_framework import serializers

from apibase.fields import AwareDateTimeField

from .selectors import replicas_shown


class ReplicaSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    gpu = serializers.IntegerField(source="gpu_id")
    node = serializers.CharField(source="node.hostname")
    device = serializers.CharField()
    address = serializers.CharField()
    state = serializers.CharField()
    reason = serializers.CharField()
    resident = serializers.ListField(help_text="The models in its cache, as it last said (name, version, bytes, ...).")
    memory_budget = serializers.IntegerField(help_text="Bytes its models may take.")
    spawned_at = AwareDateTimeField(allow_null=True)
    ready_at = AwareDateTimeField(allow_null=True)
    ended_at = AwareDateTimeField(allow_null=True)


class ServingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    reason = serializers.CharField()
    spec = serializers.DictField()
    resolved = serializers.ListField(help_text="The model versions served, resolved at slot start.")
    replicas = serializers.SerializerMethodField()
    started_at = AwareDateTimeField(allow_null=True)
    ended_at = AwareDateTimeField(allow_null=True)

    def get_replicas(self, obj) -> list[dict]:
        # Loaded with a list of bookings (ServingWork.prefetch, in reservation_queryset), so the list
        # asks no query per serving; read here for a serving shown without them.
        prefetch_related_objects([obj], Prefetch("replicas", queryset=replicas_shown()))
        return ReplicaSerializer(obj.replicas.all(), many=True).data
