"""The iCal URL's token is checked for its shape before the database is asked: anything that is not
a feed token (a NUL, other characters, another length) is a 404, never a 500."""

import pytest
from django.test import Client

from web import services as web_services

from ..support import book

pytestmark = pytest.mark.usefixtures("frozen")

@pytest.mark.parametrize(
    "path",
    ["/ical/a%00b.ics", "/ical/%00.ics", "/ical/" + "A" * 42 + "%00.ics", "/ical/" + "a" * 500 + ".ics",
     "/ical/" + "a" * 42 + "%C3%A9.ics", "/ical/a%20b.ics", "/ical/..%2F.ics"],
)
def test_a_token_that_is_not_shaped_like_one_is_a_404_not_a_500(db, path):
    response = Client(raise_request_exception=False).get(path)

    assert response.status_code == 404
    assert b"VEVENT" not in response.content


def test_a_real_token_still_opens_its_feed(cluster, owner):
    book(owner, cluster["node1"][:1])
    token = web_services.calendar_feed_for(user=owner).token

    response = Client().get(f"/ical/{token}.ics")

    assert response.status_code == 200
    assert b"BEGIN:VEVENT" in response.content
