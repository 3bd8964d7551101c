"""How a serving booking and its replicas show in the API (inside the booking's `serve`)."""

from rest_framework import serializers

from apibase.fields import AwareDateTimeField


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
        replicas = obj.replicas.select_related("node").order_by("gpu_id", "-id")
        return ReplicaSerializer(replicas, many=True).data
