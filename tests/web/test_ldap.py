"""Company sign-in against a real slapd: the login page and the API's token endpoint, the rights and
teams the directory's groups give (and take back at the next sign-in), local accounts beside it,
a directory that is down, and failed-login lockout."""

import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reservations.models import AuditEntry, Membership, Team
from scheduler.settings import ldap_settings

from ..support import NEXT_SLOT, iso, make_user
from .ldap_server import HIGH_PRIORITY_GROUP, PASSWORDS, TEAMS, directory, slapd  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

TOKEN_URL = "/api/v1/auth/token/"
WRONG_PASSWORD = "Please enter a correct username and password"
DIRECTORY_DOWN = "The company directory is not answering"


def sign_in(client, username, password=None):
    return client.post("/login/", {"username": username, "password": password or PASSWORDS[username]})


def signed_in_as(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id).username if user_id else None


def get_token(username, password=None):
    return APIClient().post(
        TOKEN_URL, {"username": username, "password": password or PASSWORDS[username]}, format="json"
    )


def api_book(token, gpu, **fields):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    body = {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1, **fields}
    return client.post("/api/v1/reservations/", body, format="json")


def fresh(username):
    return get_user_model().objects.get(username=username)


# --- The login page ---


def test_a_directory_user_signs_in_on_the_login_page_with_their_directory_password(client, directory):
    response = sign_in(client, "alice")

    assert response.status_code == 302
    assert signed_in_as(client) == "alice"
    alice = fresh("alice")
    assert not alice.has_usable_password()  # the directory checks it, never a copy here
    assert (alice.first_name, alice.email) == ("Alice", "alice@example.com")


def test_a_wrong_directory_password_is_refused_with_the_form_error(client, directory):
    response = sign_in(client, "alice", "not-her-password")

    assert response.status_code == 200
    assert WRONG_PASSWORD in response.content.decode()
    assert signed_in_as(client) is None


def test_the_login_page_asks_for_the_company_account_when_the_directory_is_configured(client, directory):
    assert "company account" in client.get("/login/").content.decode()


def test_a_local_account_still_signs_in_when_the_directory_is_configured(client, directory, db):
    make_user("localadmin", is_staff=True)

    assert sign_in(client, "localadmin", "pw-localadmin").status_code == 302
    assert signed_in_as(client) == "localadmin"


def test_a_user_in_no_group_signs_in_and_has_no_team_and_no_rights(client, directory):
    assert sign_in(client, "nobody").status_code == 302

    nobody = fresh("nobody")
    assert signed_in_as(client) == "nobody"
    assert not Membership.objects.filter(user=nobody).exists()
    assert not nobody.is_staff
    assert not nobody.has_perm("reservations.book_high_priority")


# --- What the groups give ---


def test_the_high_priority_group_gives_the_right_to_book_high_through_the_api(directory, cluster, frozen):
    alice_token = get_token("alice").json()["token"]
    bob_token = get_token("bob").json()["token"]

    alice_booking = api_book(alice_token, cluster["node1"][0], priority="high")
    bob_booking = api_book(bob_token, cluster["node1"][1], priority="high")

    assert fresh("alice").has_perm("reservations.book_high_priority")
    assert alice_booking.status_code == 201, alice_booking.json()
    assert alice_booking.json()["priority"] == "high"
    assert bob_booking.status_code == 403


def test_a_team_group_member_books_for_that_team_which_was_created_on_first_sight(directory, cluster, frozen):
    assert not Team.objects.filter(slug="vision").exists()

    response = api_book(get_token("bob").json()["token"], cluster["node1"][0])

    assert response.status_code == 201, response.json()
    assert response.json()["team"] == "vision"
    vision = Team.objects.get(slug="vision")
    assert vision.directory_dn == f"cn=vision,{TEAMS}"
    assert list(vision.members.values_list("username", flat=True)) == ["bob"]
    assert AuditEntry.objects.filter(target=f"team:{vision.pk}", action="create").exists()
    membership = Membership.objects.get(team=vision, user__username="bob")
    assert AuditEntry.objects.filter(target=f"membership:{membership.pk}", action="create").exists()


def test_the_staff_group_makes_its_members_staff_and_no_one_else(client, directory):
    sign_in(client, "carol")
    sign_in(APIClient(), "alice")

    carol = fresh("carol")
    assert carol.is_staff
    assert not fresh("alice").is_staff
    assert AuditEntry.objects.filter(target=f"user:{carol.pk}", after__is_staff=True).exists()
    assert list(Team.objects.filter(members=carol).values_list("slug", flat=True)) == ["nlp"]


def test_someone_taken_out_of_groups_loses_the_right_and_the_team_at_the_next_sign_in(directory, cluster, frozen):
    get_token("alice")
    vision = Team.objects.get(slug="vision")
    membership = Membership.objects.get(team=vision, user__username="alice")
    directory.set_members(HIGH_PRIORITY_GROUP, [])
    directory.set_members(f"cn=vision,{TEAMS}", ["bob"])

    token = get_token("alice").json()["token"]

    alice = fresh("alice")
    assert not alice.has_perm("reservations.book_high_priority")
    assert not Membership.objects.filter(user=alice).exists()
    assert AuditEntry.objects.filter(target=f"membership:{membership.pk}", action="delete").exists()
    assert AuditEntry.objects.filter(target=f"user:{alice.pk}", after__book_high_priority=False).exists()
    no_team = api_book(token, cluster["node1"][0])
    assert no_team.status_code == 400 and "team" in no_team.json()
    Membership.objects.create(team=Team.objects.create(name="Operations", slug="ops"), user=alice)
    high = api_book(token, cluster["node1"][0], priority="high")
    assert high.status_code == 403


def test_teams_and_memberships_made_by_hand_are_left_alone_by_the_sync(client, directory):
    ops = Team.objects.create(name="Operations", slug="ops")
    hand_nlp = Team.objects.create(name="Language (by hand)", slug="nlp")
    carol = make_user("carol")  # an account made in the admin before the directory was switched on,
    carol.set_unusable_password()  # handed over to the directory by removing its password
    carol.save()
    Membership.objects.create(team=ops, user=carol, role=Membership.Role.ADMIN)
    Membership.objects.create(team=hand_nlp, user=make_user("dave"))

    assert sign_in(client, "carol").status_code == 302

    assert Membership.objects.get(team=ops, user=carol).role == Membership.Role.ADMIN
    assert hand_nlp.directory_dn == "" and not hand_nlp.members.filter(pk=carol.pk).exists()
    assert list(hand_nlp.members.values_list("username", flat=True)) == ["dave"]


# --- The API's token endpoint ---


def test_the_api_gives_a_directory_user_their_token(directory):
    response = get_token("alice")

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user__username="alice").key}
    assert get_token("alice").json()["token"] == response.json()["token"]  # the same token each time


def test_the_api_refuses_a_wrong_password_with_a_400(directory):
    response = get_token("alice", "not-her-password")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert not Token.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [({"username": "alice"}, "password"), ({"password": "x"}, "username"),
     ({"username": "alice", "password": "x", "pasword": "x"}, "pasword"), ({"username": ["a"], "password": "x"}, "username")],
)
def test_bad_input_to_the_token_endpoint_is_a_400_naming_the_field(db, body, field):
    response = APIClient().post(TOKEN_URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_a_local_account_gets_its_token_without_the_directory_configured(db):
    make_user("ci")

    response = get_token("ci", "pw-ci")

    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user__username="ci").key


# --- The directory down ---


def test_with_the_directory_down_a_local_account_still_signs_in(client, directory, db):
    make_user("localadmin", is_staff=True)

    with directory.down():
        response = sign_in(client, "localadmin", "pw-localadmin")
        token = get_token("localadmin", "pw-localadmin")

    assert response.status_code == 302
    assert signed_in_as(client) == "localadmin"
    assert token.status_code == 200


def test_with_the_directory_down_a_directory_user_is_told_it_is_not_answering(client, directory):
    sign_in(client, "alice")  # known here from an earlier sign-in
    client.logout()

    with directory.down():
        page = sign_in(client, "alice")
        api = get_token("alice")

    assert page.status_code == 200
    assert DIRECTORY_DOWN in page.content.decode()
    assert WRONG_PASSWORD not in page.content.decode()
    assert signed_in_as(client) is None
    assert api.status_code == 503
    assert api.json()["detail"].startswith(DIRECTORY_DOWN)


def test_after_the_directory_is_back_its_users_sign_in_again(client, directory):
    with directory.down():
        sign_in(client, "bob")

    assert sign_in(client, "bob").status_code == 302
    assert signed_in_as(client) == "bob"


# --- Lockout (django-axes) ---


def test_failed_directory_sign_ins_lock_the_address_out_even_for_the_right_password(client, directory):
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        sign_in(client, "alice", "guess")

    page = sign_in(client, "alice")
    api = get_token("alice")

    assert page.status_code == 429
    assert api.status_code == 429
    assert signed_in_as(client) is None


# --- Settings ---


def test_without_ldap_server_uri_there_is_no_directory_sign_in():
    assert ldap_settings({}, ["axes", "model"]) == {}
    assert "web.ldap.DirectoryBackend" not in django_settings.AUTHENTICATION_BACKENDS


def test_the_directory_backend_comes_after_axes_and_before_local_accounts(slapd):
    built = ldap_settings(slapd.environ(), ["axes.backends.AxesStandaloneBackend", "model"])

    assert built["AUTHENTICATION_BACKENDS"] == ["axes.backends.AxesStandaloneBackend", "web.ldap.DirectoryBackend", "model"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"LDAP_SERVER_URI": "http://ldap.example"}, "LDAP_SERVER_URI must be"),
        ({"LDAP_USER_SEARCH_BASE": "people at example"}, "LDAP_USER_SEARCH_BASE must be an LDAP DN"),
        ({"LDAP_USER_SEARCH_BASE": ""}, "LDAP_USER_SEARCH_BASE must be set"),
        ({"LDAP_STAFF_GROUP": "cn=staff,ou=elsewhere,dc=example,dc=com"}, "LDAP_STAFF_GROUP .* must be under"),
        ({"LDAP_GROUP_SEARCH_BASE": ""}, "LDAP_GROUP_SEARCH_BASE must be set"),
        ({"LDAP_START_TLS": "maybe"}, "LDAP_START_TLS must be a boolean"),
        ({"LDAP_SERVER_URI": "ldaps://ldap.example", "LDAP_START_TLS": "1"}, "LDAP_START_TLS is for ldap://"),
    ],
)
def test_bad_ldap_settings_are_refused(slapd, changes, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        ldap_settings({**slapd.environ(), **changes}, ["axes", "model"])


def test_a_dn_that_does_not_parse_stops_start_up(slapd):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "scheduler.settings", "SECRET_KEY": "x", "PATH": "/usr/bin:/bin",
             **slapd.environ(), "LDAP_BIND_DN": "admin@example"},
        cwd=django_settings.BASE_DIR, capture_output=True, text=True,
    )

    assert result.returncode != 0
    assert "LDAP_BIND_DN must be an LDAP DN" in result.stderr
