"""A serving booking's page: what it serves, its replicas and the memory their models take."""

import pytest

from serving.models import Model, ModelVersion, Replica, Serving

from ..support import NEXT_SLOT, book, page_client, text_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]


@pytest.fixture
def served(cluster, owner, team):
    model = Model.objects.create(team=team, name="defects")
    ModelVersion.objects.create(model=model, version=3, imgsz=64, class_names=["a"], size=1, sha256="ab" * 32)
    gpu = cluster["node1"][0]
    reservation = book(owner, [gpu], start=NEXT_SLOT, work={"serve": {"models": ["defects"], "preload": ["defects"], "max_batch": 4, "max_delay_ms": 10}})
    serving = Serving.objects.get(reservation=reservation)
    Serving.objects.filter(pk=serving.pk).update(
        status="serving",
        resolved=[{"name": "defects", "version": 3, "sha256": "ab" * 32, "pinned": True}],
    )
    Replica.objects.create(
        serving=serving, gpu=gpu, node=gpu.node, device="cpu", address="10.0.0.5:9501", token="secret-token",
        state="ready", memory_budget=512 << 20,
        resident=[{"name": "defects", "version": 3, "sha256": "ab" * 32, "bytes": 128 << 20, "pinned": True}],
    )
    return reservation


def test_the_team_sees_the_models_served_and_each_replicas_memory(served, teammate):
    response = page_client(teammate).get(f"/bookings/{served.pk}/")

    text = text_of(response)
    assert "Serving #" in text and "defects:3" in text and "(preloaded)" in text
    assert "up to 4 images per batch, waiting at most 10 ms" in text
    assert "10.0.0.5:9501" in text and "128.0 of 512.0 MiB" in text
    content = response.content.decode()
    assert '<meter min="0" max="512.0" value="128.0"' in content
    assert "secret-token" not in content  # the replica's token never leaves the server


def test_others_see_the_booking_but_not_what_it_serves(served, outsider):
    text = text_of(page_client(outsider).get(f"/bookings/{served.pk}/"))

    assert f"#{served.pk}" in text and "Serving #" not in text and "10.0.0.5" not in text
