from datetime import timedelta
import pytest
from reservations.models import Reservation
from ..support import NEXT_SLOT, SLOT, book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")

def form_data(gpus, *, date, slot, slots=1, **extra):
    data = {"gpus": [g.pk for g in gpus], "date": date, "slot": slot, "slots": slots, "more": 0, "title": "",
            "priority": "normal", "auto_rebook": "on", "model": "", "data": "", "epochs": 10, "imgsz": 640, "batch": 16}
    data.update(extra)
    return data

def test_preview_offgrid(owner, high_booker, cluster):
    gpus = cluster["node1"][:1]
    book(owner, gpus, start=NEXT_SLOT + 2 * SLOT, slots=2, priority="low", preemptible=True)
    c = page_client(high_booker)
    r = c.post("/book/", form_data(gpus, date="2030-01-07", slot="15:00", priority="high"), headers={"HX-Request": "true"})
    print("offgrid", r.status_code, text_of(r)[:500])
    r = c.post("/book/", form_data(gpus, date="2030-01-07", slot="14:00", slots=10000 // 100, priority="high"), headers={"HX-Request": "true"})
    print("slots100", r.status_code, text_of(r)[:300])
    assert 0
