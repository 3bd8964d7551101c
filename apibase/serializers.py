from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know, so a typo ("gpu_cnt") is a 400 rather than silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
