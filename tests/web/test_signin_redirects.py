"""Where the login page sends people: a safe `next` after sign-in, never another site, never back to
the login page itself (a loop for someone already signed in); signing out is a POST only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from ..support import make_user, page_client


def signed_in_as(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id).username if user_id else None


@pytest.fixture
def person(db):
    return make_user("person")


def sign_in(client, next_url):
    return client.post(f"/login/?next={next_url}", {"username": "person", "password": "pw-person", "next": next_url})


def test_a_safe_next_is_followed_after_sign_in(person):
    client = Client()

    response = sign_in(client, "/bookings/")

    assert response.status_code == 302
    assert response["Location"] == "/bookings/"
    assert signed_in_as(client) == "person"


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example", "/\\evil.example"])
def test_an_off_site_next_is_ignored_and_sign_in_lands_on_the_calendar(person, next_url):
    client = Client()

    response = sign_in(client, next_url)

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert signed_in_as(client) == "person"


@pytest.mark.parametrize("next_url", ["/login/", "/login/?next=/login/", "http://testserver/login/"])
def test_a_signed_in_person_sent_back_to_the_login_page_lands_on_the_calendar(person, next_url):
    response = page_client(person).get("/login/", {"next": next_url})

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_signing_in_with_next_set_to_the_login_page_lands_on_the_calendar(person):
    response = sign_in(Client(), "/login/")

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_a_signed_in_person_opening_the_login_page_goes_to_a_safe_next(person):
    response = page_client(person).get("/login/", {"next": "/notices/"})

    assert response.status_code == 302
    assert response["Location"] == "/notices/"


def test_signing_out_is_a_post_that_signs_out_and_shows_the_login_page(person):
    client = page_client(person)

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert signed_in_as(client) is None


def test_a_get_of_the_logout_url_does_not_sign_out(person):
    client = page_client(person)

    response = client.get("/logout/")

    assert response.status_code == 405
    assert signed_in_as(client) == "person"
