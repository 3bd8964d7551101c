from datetime import datetime, timezone as dt_timezone
import re
import pytest
from reservations.models import Reservation
from ..support import book, page_client, make_user, text_of

def form_data(gpus, *, date, slot, slots=1, **extra):
    data = {"gpus": [g.pk for g in gpus], "date": date, "slot": slot, "slots": slots, "more": 0, "title": "",
            "priority": "normal", "auto_rebook": "on", "model": "", "data": "", "epochs": 10, "imgsz": 640, "batch": 16}
    data.update(extra)
    return data

def test_dst_ambiguous(frozen, owner, cluster):
    frozen.move_to(datetime(2030, 11, 1, 9, 17, tzinfo=dt_timezone.utc))
    c = page_client(owner, zone="America/New_York")
    # 06:00 UTC on 2030-11-03 is a 2-hour boundary, = 01:00 EST (the second 01:00 that night).
    r = c.post("/book/", form_data(cluster["node1"][:1], date="2030-11-03", slot="01:00"), headers={"HX-Request": "true"})
    print("ambiguous", r.status_code, text_of(r)[:400])
    print(list(Reservation.objects.values_list("start", "end")))
    # Feed for that night as Event Calendar asks it in local wall time
    r = c.get("/calendar/events/", {"start": "2030-11-03T00:00:00", "end": "2030-11-04T00:00:00", "zone": "America/New_York"})
    print("feed", r.status_code, r.content[:300])
    assert 0

def test_dst_gap(frozen, owner, cluster):
    frozen.move_to(datetime(2030, 3, 8, 9, 17, tzinfo=dt_timezone.utc))
    c = page_client(owner, zone="Europe/London")
    # 2030-03-31 01:00 London does not exist
    r = c.post("/book/", form_data(cluster["node1"][:1], date="2030-03-31", slot="01:00"), headers={"HX-Request": "true"})
    print("gap", r.status_code, text_of(r)[:400])
    print(list(Reservation.objects.values_list("start", "end")))
    assert 0

def test_no_team(frozen, cluster, db):
    u = make_user("loner")
    c = page_client(u)
    r = c.post("/book/", form_data(cluster["node1"][:1], date="2030-01-07", slot="10:00"), headers={"HX-Request": "true"})
    print("noteam", r.status_code, text_of(r)[:400])
    r = c.get("/")
    print("page has no-team", "belong to no team" in text_of(r))
    assert 0
