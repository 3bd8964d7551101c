"""The kinds of work a booking may carry are registered by their apps (AppConfig.ready), against the
WorkKind protocol: reservations itself names neither."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from reservations.jobs import BookingWork, work_kinds
from serving.hooks import ServingWork
from serving.supervisor import ReplicaSupervisor
from trainer.hooks import TrainingWork
from trainer.supervisors import node_supervisors


def test_the_trainer_and_serving_apps_register_their_kinds_of_work_at_start_up():
    assert {field: type(kind) for field, kind in work_kinds.kinds.items()} == {"job": TrainingWork, "serve": ServingWork}
    assert work_kinds.related_names == ("job", "serving")


def test_the_serving_app_registers_its_replicas_with_the_node_agents():
    assert list(node_supervisors) == [ReplicaSupervisor]


def test_a_second_kind_for_the_same_field_is_refused():
    registry = BookingWork()
    registry.register(TrainingWork())

    with pytest.raises(ImproperlyConfigured, match="'job'"):
        registry.register(TrainingWork())


def test_something_that_is_not_a_kind_of_work_is_refused():
    class Incomplete:
        field = "job"
        related_name = "job"

    with pytest.raises(ImproperlyConfigured, match="not a WorkKind"):
        BookingWork().register(Incomplete())
