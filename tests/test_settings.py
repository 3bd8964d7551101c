import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from scheduler.settings import env_bool, env_float, env_int, env_list


def test_typed_env_helpers_parse_set_values_and_default_missing_ones(monkeypatch):
    monkeypatch.setenv("X_INT", "7")
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    monkeypatch.setenv("X_FLOAT", "0.25")

    assert env_int("X_INT", 1) == 7
    assert env_bool("X_BOOL", False) is True
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    assert env_int("X_MISSING", 3) == 3
    assert env_float("X_FLOAT", 30) == 0.25


@pytest.mark.parametrize("helper, raw", [(env_int, "two"), (env_bool, "maybe"), (env_float, "soon")])
def test_typed_env_helpers_fail_loudly_on_bad_values(monkeypatch, helper, raw):
    monkeypatch.setenv("X_BAD", raw)

    with pytest.raises(ImproperlyConfigured, match="X_BAD"):
        helper("X_BAD", 1)


def test_an_integer_below_its_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("X_SMALL", "0")

    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("X_SMALL", 2, minimum=1)


def test_a_slot_that_does_not_divide_a_day_stops_start_up():
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "scheduler.settings", "SECRET_KEY": "x", "SLOT_MINUTES": "7",
             "PATH": "/usr/bin:/bin"},
        cwd=settings.BASE_DIR, capture_output=True, text=True,
    )

    assert result.returncode != 0
    assert "must divide a day" in result.stderr


@pytest.mark.parametrize("raw, message", [("100/mouse", "ROUTER_TEAM_RATE must be a rate"), ("95x0-9599", "REPLICA_PORTS")])
def test_a_bad_front_door_rate_or_replica_port_range_stops_start_up(raw, message):
    name = "ROUTER_TEAM_RATE" if "/" in raw else "REPLICA_PORTS"
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "scheduler.settings", "SECRET_KEY": "x", name: raw, "PATH": "/usr/bin:/bin"},
        cwd=settings.BASE_DIR, capture_output=True, text=True,
    )

    assert result.returncode != 0
    assert message in result.stderr
