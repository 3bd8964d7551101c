"""The profile page: who I am, my teams and rights, my API token and my calendar feeds."""

from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reservations.models import Membership
from web.models import CalendarFeed

from ..support import make_user

PROFILE = "/profile/"


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def me_with(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/me/")


def feed_urls(user):
    feeds = CalendarFeed.objects.filter(user=user)
    return {f"http://testserver{reverse('web:ical', args=[feed.token])}" for feed in feeds}


def test_the_page_shows_who_i_am_my_teams_with_roles_and_my_rights(team, other_team, owner):
    owner.first_name, owner.last_name, owner.email = "Olga", "Owner", "olga@example.org"
    owner.save()
    Membership.objects.create(user=owner, team=other_team, role=Membership.Role.ADMIN)

    page = signed_in(owner).get(PROFILE).content.decode()

    for text in ("owner", "Olga Owner", "olga@example.org", "Vision", "Member", "Language", "Team admin"):
        assert text in page, text
    assert "Not staff." in page
    assert "You may book at normal and low priority, not high." in page


def test_the_page_says_when_i_may_book_high_priority_and_am_staff(high_booker):
    high_booker.is_staff = True
    high_booker.save()

    page = signed_in(high_booker).get(PROFILE).content.decode()

    assert "You may book at high priority" in page
    assert "Staff: you may use the admin site" in page


def test_the_page_makes_and_shows_my_api_token_and_it_works(owner):
    page = signed_in(owner).get(PROFILE).content.decode()

    key = Token.objects.get(user=owner).key
    assert '<code id="api-token-key"' in page and key in page
    assert me_with(key).status_code == 200


def test_rotating_the_api_token_refuses_the_old_key_and_accepts_the_new_one(owner):
    client = signed_in(owner)
    client.get(PROFILE)
    old = Token.objects.get(user=owner).key

    response = client.post(reverse("web:api-token-rotate"), follow=True)

    assert response.redirect_chain == [(PROFILE, 302)]
    new = Token.objects.get(user=owner).key
    assert new != old
    page = response.content.decode()
    assert new in page and old not in page
    assert "Your API token was replaced; update your CI secrets." in page
    assert me_with(old).status_code == 401
    assert me_with(new).status_code == 200


def test_the_page_lists_my_feed_and_one_per_team_as_absolute_urls(team, other_team, owner):
    Membership.objects.create(user=owner, team=other_team)

    page = signed_in(owner).get(PROFILE).content.decode()

    urls = feed_urls(owner)
    assert len(urls) == 3
    for url in urls:
        assert url in page
    assert "From URL" in page  # how to subscribe


def test_joining_a_team_adds_its_feed_and_keeps_the_others(team, other_team, owner):
    client = signed_in(owner)
    client.get(PROFILE)
    before = set(CalendarFeed.objects.filter(user=owner).values_list("token", flat=True))
    Membership.objects.create(user=owner, team=other_team)

    page = client.get(PROFILE).content.decode()

    after = set(CalendarFeed.objects.filter(user=owner).values_list("token", flat=True))
    assert len(before) == 2 and before < after and len(after) == 3
    assert all(token in page for token in after)


def test_rotating_a_feed_changes_its_url_and_only_that_one(team, owner):
    client = signed_in(owner)
    client.get(PROFILE)
    own = CalendarFeed.objects.get(user=owner, team=None)
    team_token = CalendarFeed.objects.get(user=owner, team=team).token

    response = client.post(reverse("web:feed-rotate", args=[own.pk]), follow=True)

    assert response.redirect_chain == [(PROFILE, 302)]
    own_after = CalendarFeed.objects.get(pk=own.pk)
    assert own_after.token != own.token
    assert CalendarFeed.objects.get(user=owner, team=team).token == team_token
    assert own_after.token in response.content.decode() and own.token not in response.content.decode()
    assert "the old one no longer works" in response.content.decode()


def test_i_cannot_rotate_someone_elses_feed(team, owner, teammate):
    signed_in(teammate).get(PROFILE)
    theirs = CalendarFeed.objects.get(user=teammate, team=None)

    response = signed_in(owner).post(reverse("web:feed-rotate", args=[theirs.pk]))

    assert response.status_code == 404
    assert CalendarFeed.objects.get(pk=theirs.pk).token == theirs.token


def test_a_get_never_rotates_anything(team, owner):
    client = signed_in(owner)
    client.get(PROFILE)
    key = Token.objects.get(user=owner).key
    tokens = set(CalendarFeed.objects.filter(user=owner).values_list("token", flat=True))
    feed = CalendarFeed.objects.filter(user=owner).first()

    for url in (PROFILE, reverse("web:api-token-rotate"), reverse("web:feed-rotate", args=[feed.pk])):
        assert client.get(url).status_code in (200, 405), url

    assert Token.objects.get(user=owner).key == key
    assert set(CalendarFeed.objects.filter(user=owner).values_list("token", flat=True)) == tokens


def test_every_form_on_the_page_carries_a_csrf_token(team, owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    page = client.get(PROFILE).content.decode()

    assert page.count("<form method=\"post\"") == page.count("csrfmiddlewaretoken") > 2
    # Without the token the rotation is refused and nothing changes.
    key = Token.objects.get(user=owner).key
    assert client.post(reverse("web:api-token-rotate")).status_code == 403
    assert Token.objects.get(user=owner).key == key


def test_anonymous_visitors_are_sent_to_sign_in_and_change_nothing(db):
    response = Client().get(PROFILE)

    assert response.status_code == 302 and response["Location"] == "/login/?next=/profile/"
    rotate = reverse("web:api-token-rotate")
    assert Client().post(rotate)["Location"] == f"/login/?next={rotate}"
    assert not Token.objects.exists() and not CalendarFeed.objects.exists()


def test_a_user_in_no_team_sees_only_the_own_bookings_feed(db):
    loner = make_user("loner")

    page = signed_in(loner).get(PROFILE).content.decode()

    assert "You belong to no team yet" in page
    assert len(feed_urls(loner)) == 1
