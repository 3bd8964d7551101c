import copy

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know, so a typo ("gpu_cnt") is a 400 rather than silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class PlainFieldsMixin:
    """For a serializer built on every request of a hot path (a booking's input and its answer):
    each instance binds shallow copies of its declared fields instead of DRF's deep copies.

    DRF deep-copies the declared fields for every serializer instance, and a field's deep copy runs
    its __init__ again on deep copies of its arguments (choices, lazy help texts, validators and
    their messages): about 0.2 ms for a dozen fields, more than validating a booking's input
    (bench/booking_profile.py). A plain field holds nothing per instance but what bind() sets (its
    name, parent, label and source), so a shallow copy bound to this instance is as much its own as
    the deep copy; a list's child gets a copy of its own whose parent is the list's copy. A nested
    serializer, which caches fields bound to itself, is still deep-copied."""

    def get_fields(self):
        return {
            name: _plain_copy(field) if _is_plain(field) else copy.deepcopy(field)
            for name, field in self._declared_fields.items()
        }


def _is_plain(field):
    child = getattr(field, "child", None)
    return not isinstance(field, serializers.BaseSerializer) and (child is None or _is_plain(child))


def _plain_copy(field, parent=None):
    clone = copy.copy(field)
    if parent is not None:  # a child: bound to its list when the list was declared
        clone.parent = parent
    child = getattr(field, "child", None)
    if child is not None:
        clone.child = _plain_copy(child, parent=clone)
    return clone
