import pytest
from django.test import Client

from reservations.models import Reservation
from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, page_client

pytestmark = pytest.mark.usefixtures("frozen")

def form_data(gpus, *, date, slot, slots=1, **extra):
    data = {"gpus": [g.pk for g in gpus], "date": date, "slot": slot, "slots": slots, "more": 0, "title": "",
            "priority": "normal", "auto_rebook": "on", "model": "", "data": "", "epochs": 10, "imgsz": 640, "batch": 16}
    data.update(extra)
    return data

def status(client, method, url, data=None, **kw):
    try:
        r = getattr(client, method)(url, data or {}, **kw)
        return r.status_code
    except Exception as exc:
        return f"EXC {type(exc).__name__}: {exc}"

def test_probe(owner, cluster, outsider, team):
    c = page_client(owner)
    c.raise_request_exception = True
    gpus = cluster["node1"][:1]
    results = {}
    results["resume superscript"] = status(c, "get", "/", {"resume": "²"})
    results["node superscript"] = status(c, "get", "/calendar/events/", {"start": "2030-01-07T00:00:00Z", "end": "2030-01-08T00:00:00Z", "node": "²"})
    results["feed year1"] = status(c, "get", "/calendar/events/", {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"})
    results["feed year1 naive"] = status(c, "get", "/calendar/events/", {"start": "0001-01-01T00:00:00", "end": "0001-01-02T00:00:00", "zone": "Pacific/Kiritimati"})
    results["feed year9999"] = status(c, "get", "/calendar/events/", {"start": "9999-12-30T00:00:00Z", "end": "9999-12-31T23:00:00Z"})
    results["feed year9999 zone"] = status(c, "get", "/calendar/events/", {"start": "9999-12-31T00:00:00", "end": "9999-12-31T23:00:00", "zone": "America/New_York"})
    results["feed nul"] = status(c, "get", "/calendar/events/", {"start": "2030-01-07T00:00:00Z", "end": "2030-01-08T00:00:00Z", "team": "a\x00b"})
    results["feed zone weird"] = status(c, "get", "/calendar/events/", {"start": "2030-01-07T00:00:00", "end": "2030-01-08T00:00:00", "zone": "../../etc/passwd"})
    results["feed zone nul"] = status(c, "get", "/calendar/events/", {"start": "2030-01-07T00:00:00", "end": "2030-01-08T00:00:00", "zone": "Europe/Berlin\x00"})
    c2 = page_client(owner); c2.raise_request_exception = True
    c2.cookies["tz"] = "%00"
    results["cookie tz nul"] = status(c2, "get", "/")
    c2.cookies["tz"] = "/etc/localtime"
    results["cookie tz abs"] = status(c2, "get", "/")
    results["book 9999"] = status(c, "post", "/book/", form_data(gpus, date="9999-12-31", slot="22:00", slots=84))
    results["book 0001"] = status(c, "post", "/book/", form_data(gpus, date="0001-01-01", slot="00:00"))
    c3 = page_client(owner, zone="Pacific/Kiritimati"); c3.raise_request_exception = True
    results["book 0001 kiri"] = status(c3, "post", "/book/", form_data(gpus, date="0001-01-01", slot="00:00"))
    c4 = page_client(owner, zone="America/New_York"); c4.raise_request_exception = True
    results["book 9999 ny"] = status(c4, "post", "/book/", form_data(gpus, date="9999-12-31", slot="22:00"))
    results["book more huge"] = status(c, "post", "/book/", form_data(gpus, date="2030-01-07", slot="10:00", more="99999999999999999999"))
    results["book gpus bad"] = status(c, "post", "/book/", {**form_data([], date="2030-01-07", slot="10:00"), "gpus": ["x", "99999999999999999999"]})
    results["book nul title"] = status(c, "post", "/book/", form_data(gpus, date="2030-01-07", slot="10:00", title="a\x00b"))
    results["book team other"] = status(c, "post", "/book/", form_data(gpus, date="2030-01-07", slot="10:00", team="999999999999999999999"))
    results["book resume huge"] = status(c, "post", "/book/", form_data(gpus, date="2030-01-07", slot="10:00", train="on", data="x.yaml", resume_from="999999999999999999999"))
    r = book(owner, gpus)
    results["move 9999"] = status(c, "post", f"/bookings/{r.pk}/move/", {"start": "9999-12-31T22:00", "slots": 10000, "next": "booking"})
    results["move 0001"] = status(c, "post", f"/bookings/{r.pk}/move/", {"start": "0001-01-01T00:00", "slots": 1, "next": "booking"})
    results["move dst gap"] = status(page_client(owner, zone="America/New_York"), "post", f"/bookings/{r.pk}/move/", {"start": "2030-03-10T02:00", "slots": 1, "next": "list"})
    results["move page huge"] = status(c, "post", f"/bookings/{r.pk}/move/", {"start": "2030-01-07T12:00", "slots": 1, "next": "list", "page": "999999999999999999999999"})
    results["cancel nul"] = status(c, "post", f"/bookings/{r.pk}/cancel/", {"reason": "a\x00b", "next": "booking"})
    results["transfer nul"] = status(c, "post", f"/bookings/{r.pk}/transfer/", {"to": "a\x00b", "next": "booking"})
    results["booking huge pk"] = status(c, "get", "/bookings/99999999999999999999999/")
    results["cancel huge pk"] = status(c, "post", "/bookings/99999999999999999999999/cancel/", {})
    results["job huge pk"] = status(c, "get", "/bookings/99999999999999999999999/job/")
    results["feed rotate huge"] = status(c, "post", "/profile/feeds/99999999999999999999999/rotate/")
    results["ical huge"] = status(Client(), "get", "/ical/" + "a" * 5000 + ".ics")
    results["ical nul"] = status(Client(), "get", "/ical/a%00b.ics")
    results["my page nul"] = status(c, "get", "/bookings/", {"page": "\x00"})
    results["notices page"] = status(c, "get", "/notices/", {"page": "-1"})
    results["login next nul"] = status(Client(), "get", "/login/", {"next": "\x00"})
    for k, v in results.items():
        print(f"{k:25} {v}")
    assert 0
