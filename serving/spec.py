"""The serving spec a booking may carry (`serve` in the API): which registered models its replicas
serve, which are loaded at start and kept, and how requests are batched."""

import re

from rest_framework import serializers

from apibase.serializers import StrictSerializer

from .models import MODEL_NAME

# "defects" (its latest version at slot start) or "defects:3".
MODEL_REF = re.compile(MODEL_NAME.rstrip("$") + r"(?::([1-9][0-9]{0,8}))?$")
MAX_MODELS = 32


def parse_ref(ref):
    """("defects", 3) for "defects:3"; ("people", None) for "people" (its latest version)."""
    name, _, version = ref.partition(":")
    return name, int(version) if version else None


class ServeSpecSerializer(StrictSerializer):
    models = serializers.ListField(
        child=serializers.CharField(max_length=80), min_length=1, max_length=MAX_MODELS,
        help_text='Registered models of the booking\'s team: "name" (its latest version at slot start) or "name:version".',
    )
    preload = serializers.ListField(
        child=serializers.CharField(max_length=80), max_length=MAX_MODELS, default=list,
        help_text="Models (as named in `models`) loaded at start and kept resident unless an operator unloads them.",
    )
    max_batch = serializers.IntegerField(min_value=1, max_value=64, default=8)
    max_delay_ms = serializers.IntegerField(min_value=0, max_value=1000, default=10)
    memory_budget_mb = serializers.IntegerField(
        min_value=1, max_value=1 << 20, required=False, allow_null=True, default=None,
        help_text="Memory each replica's models may take (default: a share of the device's memory).",
    )

    def validate_models(self, value):
        bad = [ref for ref in value if not MODEL_REF.match(ref)]
        if bad:
            raise serializers.ValidationError(f"Name models as name or name:version (defects, defects:3): {', '.join(bad)}.")
        names = [parse_ref(ref)[0] for ref in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise serializers.ValidationError(f"Name each model once: {', '.join(twice)}.")
        return value

    def validate(self, attrs):
        extra = [ref for ref in attrs.get("preload", []) if ref not in attrs["models"]]
        if extra:
            raise serializers.ValidationError({"preload": [f"Preload only models named in models: {', '.join(extra)}."]})
        return attrs
