import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap.config import LDAPSearchUnion

from scheduler.settings import env_bool, env_float, env_int, env_list, ldap_settings

# A directory's settings with groups in ou=groups (the LDAP tests run a real one: tests/web/ldap_server.py).
LDAP_ENV = {
    "LDAP_SERVER_URI": "ldap://ldap.example",
    "LDAP_USER_SEARCH_BASE": "ou=people,dc=example,dc=com",
    "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=example,dc=com",
    "LDAP_STAFF_GROUP": "cn=staff,ou=groups,dc=example,dc=com",
}


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


@pytest.mark.slow
def test_a_slot_that_does_not_divide_a_day_stops_start_up():
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "scheduler.settings", "SECRET_KEY": "x", "SLOT_MINUTES": "7",
             "PATH": "/usr/bin:/bin"},
        cwd=settings.BASE_DIR, capture_output=True, text=True,
    )

    assert result.returncode != 0
    assert "must divide a day" in result.stderr


@pytest.mark.slow
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


def group_search_bases(team_base):
    search = ldap_settings({**LDAP_ENV, "LDAP_TEAM_GROUP_BASE": team_base}, ["axes", "model"])["AUTH_LDAP_GROUP_SEARCH"]
    return [one.base_dn for one in search.searches] if isinstance(search, LDAPSearchUnion) else [search.base_dn]


def test_a_team_base_beside_the_group_base_is_accepted_and_searched_as_well():
    assert group_search_bases("ou=teams,dc=example,dc=com") == ["ou=groups,dc=example,dc=com", "ou=teams,dc=example,dc=com"]


def test_a_team_base_inside_the_group_base_in_any_spelling_is_searched_once():
    assert group_search_bases("OU=Teams, ou=Groups,dc=example,dc=com") == ["ou=groups,dc=example,dc=com"]


def test_a_team_base_that_is_no_dn_is_refused():
    with pytest.raises(ImproperlyConfigured, match="LDAP_TEAM_GROUP_BASE must be an LDAP DN"):
        ldap_settings({**LDAP_ENV, "LDAP_TEAM_GROUP_BASE": "the teams"}, ["axes", "model"])


def test_a_staff_group_outside_the_group_base_is_still_refused():
    with pytest.raises(ImproperlyConfigured, match="LDAP_STAFF_GROUP .* must be under LDAP_GROUP_SEARCH_BASE"):
        ldap_settings({**LDAP_ENV, "LDAP_STAFF_GROUP": "cn=staff,ou=teams,dc=example,dc=com",
                       "LDAP_TEAM_GROUP_BASE": "ou=teams,dc=example,dc=com"}, ["axes", "model"])
