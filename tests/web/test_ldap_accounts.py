"""Directory sign-in never opens a local account: a uid that matches a local username (in any case)
is refused as a wrong password, while the local password still signs in; an admin hands an account
over to the directory by removing its password. Usernames with LDAP filter characters find nobody."""

import logging

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from ..support import make_user
from .ldap_server import PASSWORDS, directory, slapd  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

WRONG_PASSWORD = "Please enter a correct username and password"


def sign_in(client, username, password):
    return client.post("/login/", {"username": username, "password": password})


def signed_in_as(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id).username if user_id else None


@pytest.mark.parametrize("local_name", ["ALICE", "alice", "Alice"])
def test_the_directory_password_does_not_sign_in_as_a_local_superuser_of_the_same_name(
    client, directory, local_name, caplog
):
    local = make_user(local_name, is_staff=True, is_superuser=True)

    with caplog.at_level(logging.WARNING, logger="web.ldap"):
        response = sign_in(client, "alice", PASSWORDS["alice"])

    assert response.status_code == 200
    assert WRONG_PASSWORD in response.content.decode()
    assert signed_in_as(client) is None
    assert list(get_user_model().objects.filter(username__iexact="alice")) == [local]
    assert "is a local one" in caplog.text
    # Nor through the API's token endpoint.
    api = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORDS["alice"]}, format="json")
    assert api.status_code == 400


def test_the_local_account_still_signs_in_with_its_own_password_beside_the_directory(client, directory):
    make_user("ALICE", is_superuser=True, is_staff=True)

    assert sign_in(client, "ALICE", "pw-ALICE").status_code == 302
    assert signed_in_as(client) == "ALICE"


def test_an_account_whose_password_an_admin_removed_is_handed_over_to_the_directory(client, directory):
    alice = make_user("alice")
    alice.set_unusable_password()
    alice.save()

    assert sign_in(client, "alice", PASSWORDS["alice"]).status_code == 302
    assert signed_in_as(client) == "alice"
    assert get_user_model().objects.filter(username__iexact="alice").count() == 1


def test_a_directory_made_account_keeps_signing_in_beside_a_later_local_one_spelt_otherwise(client, directory):
    assert sign_in(client, "alice", PASSWORDS["alice"]).status_code == 302
    client.logout()
    make_user("ALICE")

    assert sign_in(client, "Alice", PASSWORDS["alice"]).status_code == 302
    assert signed_in_as(client) == "alice"


@pytest.mark.parametrize("username", ["*", "a*", ")(", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*"])
def test_usernames_with_ldap_filter_characters_sign_nobody_in(client, directory, username):
    response = sign_in(client, username, PASSWORDS["alice"])
    api = APIClient().post("/api/v1/auth/token/", {"username": username, "password": PASSWORDS["alice"]}, format="json")

    assert response.status_code == 200
    assert WRONG_PASSWORD in response.content.decode()
    assert signed_in_as(client) is None
    assert api.status_code == 400
    assert not get_user_model().objects.exists()
