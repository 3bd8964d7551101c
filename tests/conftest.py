"""Shared fixtures: a small cluster and the people every permission test needs.

Time is frozen at FROZEN_NOW (a Monday, 09:17 UTC) by `frozen`, so slot boundaries are predictable:
the next boundary is 10:00.
"""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reservations.models import Membership, Team
from reservations.services import node_register
from trainer.hardware import Device

FROZEN_NOW = datetime(2030, 1, 7, 9, 17, tzinfo=dt_timezone.utc)
NEXT_SLOT = datetime(2030, 1, 7, 10, 0, tzinfo=dt_timezone.utc)
SLOT = timedelta(hours=2)


def iso(moment):
    return moment.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def frozen():
    with time_machine.travel(FROZEN_NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def cluster(db):
    """Two nodes of four GPUs each: returns {"node1": [gpu, ...], "node2": [...]}."""
    nodes = {}
    for name in ("node1", "node2"):
        node = node_register(
            hostname=name,
            devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"{name}-{i}") for i in range(4)],
        )
        nodes[name] = list(node.gpus.order_by("index"))
    return nodes


@pytest.fixture
def team(db):
    return Team.objects.create(name="Vision", slug="vision")


@pytest.fixture
def other_team(db):
    return Team.objects.create(name="Language", slug="nlp")


def make_user(username, team=None, role=Membership.Role.MEMBER, **extra):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def owner(team):
    return make_user("owner", team)


@pytest.fixture
def teammate(team):
    return make_user("teammate", team)


@pytest.fixture
def team_admin(team):
    return make_user("teamadmin", team, Membership.Role.ADMIN)


@pytest.fixture
def outsider(other_team):
    return make_user("outsider", other_team)


@pytest.fixture
def staff(db):
    return make_user("staff", None, is_staff=True)


@pytest.fixture
def high_booker(team):
    user = make_user("highbooker", team)
    user.user_permissions.add(Permission.objects.get(codename="book_high_priority"))
    return user


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(owner):
    """An API client signed in (by token) as `owner`."""
    return client_for(owner)
