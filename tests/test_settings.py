import pytest
from django.core.exceptions import ImproperlyConfigured

from scheduler.settings import env_bool, env_int, env_list


def test_typed_env_helpers_read_values(monkeypatch):
    monkeypatch.setenv("X_INT", "7")
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_LIST", "a, b,,c")

    assert env_int("X_INT", 1) == 7
    assert env_bool("X_BOOL", False) is True
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    assert env_int("X_MISSING", 3) == 3


@pytest.mark.parametrize("helper, raw", [(env_int, "two"), (env_bool, "maybe")])
def test_typed_env_helpers_fail_loudly_on_bad_values(monkeypatch, helper, raw):
    monkeypatch.setenv("X_BAD", raw)

    with pytest.raises(ImproperlyConfigured, match="X_BAD"):
        helper("X_BAD", 1)


def test_an_integer_below_its_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("X_SMALL", "0")

    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("X_SMALL", 2, minimum=1)
