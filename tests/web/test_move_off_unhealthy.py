"""A booking on a GPU the health check took out: its page offers the window its notice suggested,
and one click moves it there."""

import re

import pytest

from reservations.models import GPU, AuditEntry

from ..support import NEXT_SLOT, book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")


def test_one_click_moves_a_booking_off_a_failed_gpu_to_the_suggested_window(owner, cluster):
    reservation = book(owner, cluster["node1"][:1], title="fine-tune")
    GPU.objects.filter(pk=cluster["node1"][0].pk).update(healthy=False)
    client = page_client(owner)

    page = client.get(f"/bookings/{reservation.pk}/")

    assert "failed its health check and is out of service" in text_of(page)
    form = re.search(rf'<div class="warning" id="off-unhealthy-{reservation.pk}">.*?</form>', page.content.decode(), re.S)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
    assert fields["gpus"] == str(cluster["node1"][1].pk)  # the nearest healthy GPU, same window

    moved = client.post(f"/bookings/{reservation.pk}/move/", fields)

    assert moved.status_code == 302
    reservation.refresh_from_db()
    assert list(reservation.allocations.values_list("gpu_id", flat=True)) == [cluster["node1"][1].pk]
    assert reservation.start == NEXT_SLOT
    assert AuditEntry.objects.filter(reservation=reservation, action="move", actor=owner).exists()


def test_no_offer_when_every_gpu_of_the_booking_is_healthy(owner, cluster):
    reservation = book(owner, cluster["node1"][:1])

    assert "failed its health check" not in text_of(page_client(owner).get(f"/bookings/{reservation.pk}/"))
