"""What the web's replica endpoints make of a browser's form: the client's 415, never a 500."""

import pytest
from django.test import Client

from serving.models import Replica

from ..support import book

pytestmark = pytest.mark.django_db

FORMS = {
    "urlencoded": ("application/x-www-form-urlencoded", "images=abc&csrfmiddlewaretoken={token}"),
    "multipart": (
        "multipart/form-data; boundary=xyz",
        '--xyz\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token}\r\n--xyz--\r\n',
    ),
}


@pytest.fixture
def replica(cluster, owner, defects, frozen):
    gpu = cluster["node1"][0]
    reservation = book(owner, [gpu], work={"serve": {"models": ["defects"]}})
    return Replica.objects.create(
        serving=reservation.serving, gpu=gpu, node=gpu.node, device="cpu", address="127.0.0.1:9", token="t",
        state=Replica.State.READY, memory_budget=1 << 30,
    )


@pytest.mark.parametrize("action", ["predict", "load", "unload"])
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_form_posted_from_a_signed_in_browser_is_a_415(replica, owner, action, form):
    # A browser's session with its CSRF cookie: Django's CSRF check reads the form's token.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    browser.get("/")
    content_type, body = form

    response = browser.post(
        f"/api/v1/replicas/{replica.pk}/models/defects/{action}/",
        data=body.format(token=browser.cookies["csrftoken"].value), content_type=content_type,
    )

    assert response.status_code == 415
    assert "form" in response.json()["detail"]
