"""PlainFieldsMixin: each serializer instance binds copies of its own, as with DRF's deep copies."""

from rest_framework import serializers

from apibase.serializers import PlainFieldsMixin


class Nested(serializers.Serializer):
    name = serializers.CharField()


class Plain(PlainFieldsMixin, serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=3)
    grid = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    kind = serializers.ChoiceField(choices=["a", "b"])
    shown = serializers.SerializerMethodField()
    nested = Nested(required=False)

    def get_shown(self, obj):
        return obj["kind"].upper()


def test_each_instance_binds_fields_of_its_own():
    first, second = Plain(), Plain()
    for name in Plain._declared_fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second


def test_a_lists_child_belongs_to_the_lists_copy():
    first, second = Plain(), Plain()
    assert first.fields["ids"].child is not second.fields["ids"].child
    assert first.fields["ids"].child.parent is first.fields["ids"]
    assert first.fields["ids"].child.root is first
    assert first.fields["grid"].child.child.root is first


def test_the_declared_fields_stay_unbound():
    Plain().fields
    assert all(field.parent is None for field in Plain._declared_fields.values())


def test_a_nested_serializer_is_copied_deeply():
    first, second = Plain(), Plain()
    assert first.fields["nested"].fields["name"].root is first
    assert second.fields["nested"].fields["name"].root is second


def test_it_validates_and_reports_as_with_deep_copies():
    serializer = Plain(data={"ids": [0, 2, "x"], "grid": [[1], ["y"]], "kind": "c"})
    assert not serializer.is_valid()
    assert serializer.errors == {
        "ids": {0: ["Ensure this value is greater than or equal to 1."], 2: ["A valid integer is required."]},
        "grid": {1: {0: ["A valid integer is required."]}},
        "kind": ['"c" is not a valid choice.'],
    }
    assert Plain(data={"ids": [1, 2], "grid": [[3]], "kind": "a"}).is_valid()


def test_it_renders_as_with_deep_copies():
    assert Plain({"ids": [1], "grid": [[2]], "kind": "b", "nested": {"name": "n"}}).data == {
        "ids": [1], "grid": [[2]], "kind": "b", "shown": "B", "nested": {"name": "n"},
    }
