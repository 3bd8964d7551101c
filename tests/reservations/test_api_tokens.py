"""API tokens are written by reservations.services only: the token endpoint and the profile page
both get a person's token from api_token_for and replace it with api_token_rotate."""

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reservations import services

from ..support import at_once, make_user


def test_api_token_for_makes_the_token_once_and_then_returns_the_same(db):
    user = make_user("ci")

    first = services.api_token_for(user=user)
    again = services.api_token_for(user=user)

    assert first.key == again.key
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [first.key]


def test_two_first_requests_at_once_make_one_token(transactional_db):
    user = make_user("ci")

    keys = at_once([lambda: services.api_token_for(user=user).key for _ in range(4)])

    assert len(set(keys)) == 1
    assert Token.objects.filter(user=user).count() == 1


def test_api_token_rotate_replaces_the_key(db):
    user = make_user("ci")
    old = services.api_token_for(user=user).key

    new = services.api_token_rotate(user=user).key

    assert new != old
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [new]


def test_the_token_endpoint_hands_out_the_token_the_service_keeps(db):
    user = make_user("ci")
    kept = services.api_token_for(user=user).key

    response = APIClient().post("/api/v1/auth/token/", {"username": "ci", "password": "pw-ci"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"token": kept}
