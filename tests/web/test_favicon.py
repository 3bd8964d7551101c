"""/favicon.ico, which browsers and tools ask for whatever the page links."""

from django.test import Client


def test_favicon_ico_answers_with_an_icon_without_signing_in(db):
    response = Client().get("/favicon.ico", follow=True)

    assert response.status_code == 200
    assert response["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body[:4] == b"\x00\x00\x01\x00"  # the ICO header: reserved 0, type 1 (icon)
