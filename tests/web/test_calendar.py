"""The calendar page, its event feed and the booking form: what a person sees and what gets booked.

Pages are driven with Django's test client (the browser tests in test_browser.py drive Chromium).
Time is frozen at FROZEN_NOW (Monday 09:17 UTC): the next slot starts at 10:00 UTC.
"""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reservations.models import GPU, AuditEntry, Membership, Node, Reservation
from reservations.services import Device, node_register
from serving.models import Model, ModelVersion, Serving
from trainer.models import TrainingJob
from web.forms import BookingForm, RecentChoiceField
from web.selectors import servable_models

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, make_user, page_client

pytestmark = pytest.mark.usefixtures("frozen")
WEEK = {"start": "2030-01-07T00:00:00Z", "end": "2030-01-14T00:00:00Z"}



def form_data(gpus, *, start=NEXT_SLOT, slots=1, **extra):
    """The booking form as the browser posts it, in UTC wall time unless the client has a zone."""
    data = {
        "gpus": [g.pk for g in gpus], "date": start.strftime("%Y-%m-%d"), "slot": start.strftime("%H:%M"),
        "slots": slots, "more": 0, "title": "", "priority": "normal", "auto_rebook": "on",
        "model": "", "data": "", "epochs": 10, "imgsz": 640, "batch": 16,
    }
    data.update(extra)
    return data


def post_form(client, data, htmx=True):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/book/", data, headers=headers)


def hidden_forms(html):
    """Each <form> of an answer as the fields it would post (its hidden inputs)."""
    forms = re.findall(r"<form[^>]*>(.*?)</form>", html, re.S)
    return [
        [(m.group(1), m.group(2)) for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)]
        for form in forms
    ]


def feed(client, **params):
    return client.get("/calendar/events/", {**WEEK, **params})


# --- The page -------------------------------------------------------------------------------------


def test_the_calendar_has_a_track_per_gpu_grouped_under_its_node_with_health(owner, cluster):
    gpu = cluster["node2"][3]
    gpu.healthy = False
    gpu.save()

    response = page_client(owner).get("/")

    assert response.status_code == 200
    resources = json.loads(re.search(r'id="calendar-resources"[^>]*>(.*?)</script>', response.content.decode(), re.S).group(1))
    assert [r["title"] for r in resources] == ["node1 (online)", "node2 (online)"]
    assert [g["title"] for g in resources[1]["children"]][3] == "gpu3 · A100 · unhealthy"
    assert [len(r["children"]) for r in resources] == [4, 4]
    # The keyboard path: the same GPUs in the form, the unhealthy one not selectable.
    assert re.search(rf'<option value="{gpu.pk}"[^>]* disabled>node2/gpu3 \(unhealthy\)</option>', response.content.decode())


def gpu_list(html):
    """The booking form's GPU list: [(group label, [(option text, data-imgsz, data-batch), ...])]."""
    select = re.search(r'<select name="gpus".*?</select>', html, re.S).group(0)
    return [
        (label, re.findall(r'<option value="\d+" data-imgsz="(\d+)" data-batch="(\d+)"[^>]*>([^<]*)</option>', options))
        for label, options in re.findall(r'<optgroup label="([^"]*)">(.*?)</optgroup>', select, re.S)
    ]


@pytest.fixture
def three_nodes(cluster):
    """node1 offline, node2 online with no healthy GPU, node3 online with two healthy CPU devices."""
    Node.objects.filter(hostname="node1").update(online=False)
    GPU.objects.filter(node__hostname="node2").update(healthy=False)
    node_register(hostname="node3", devices=[Device(index=i, model=GPU.CPU_MODEL, memory_mb=4096, uuid=f"cpu-{i}") for i in range(2)])


def test_the_gpu_list_puts_the_nodes_that_can_train_now_first_and_says_which_can(owner, three_nodes):
    html = page_client(owner).get("/").content.decode()

    assert [label for label, _ in gpu_list(html)] == [
        "node3 (online · can train now)",
        "node2 (online · no healthy GPU)",
        "node1 (offline · bookable)",
    ]
    resources = json.loads(re.search(r'id="calendar-resources"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert [r["title"] for r in resources] == ["node3 (online)", "node2 (online)", "node1 (offline)"]


def test_each_gpu_carries_the_image_size_and_batch_a_job_on_it_starts_from(owner, three_nodes):
    groups = dict(gpu_list(page_client(owner).get("/").content.decode()))

    assert groups["node3 (online · can train now)"] == [("64", "4", "node3/gpu0 (CPU)"), ("64", "4", "node3/gpu1 (CPU)")]
    assert groups["node1 (offline · bookable)"][0] == ("640", "16", "node1/gpu0")
    html = page_client(owner).get("/").content.decode()
    assert re.search(r'<input type="number" name="imgsz" value="640"', html)
    assert re.search(r'<input type="number" name="batch" value="16"', html)


def test_a_signed_out_visitor_is_sent_to_sign_in_and_gets_no_bookings(owner, cluster):
    book(owner, cluster["node1"][:1], title="secret plan")

    assert Client().get("/").url == "/login/?next=/"
    response = Client().get("/calendar/events/", WEEK)
    assert response.status_code == 302 and b"secret plan" not in response.content


def test_a_person_with_no_team_is_told_why_they_cannot_book(cluster, db):
    loner = make_user("loner")
    client = page_client(loner)

    assert "You belong to no team" in client.get("/").content.decode()
    response = post_form(client, form_data(cluster["node1"][:1]))
    assert response.status_code == 400
    assert "belong to no team" in response.content.decode()
    assert not Reservation.objects.exists()


def test_high_priority_is_offered_only_to_those_who_may_book_it(owner, high_booker, cluster):
    assert '<option value="high">' not in page_client(owner).get("/").content.decode()
    assert '<option value="high">' in page_client(high_booker).get("/").content.decode()


def test_resume_from_a_job_is_filled_in_from_the_link(owner, cluster):
    reservation = book(owner, cluster["node1"][:1])
    job = TrainingJob.objects.create(reservation=reservation, spec={}, epochs=5, checkpoint="/x/last.pt", checkpoint_epoch=2)

    html = page_client(owner).get(f"/?resume={job.pk}").content.decode()

    assert re.search(rf'<option value="{job.pk}" selected>job {job.pk}: untitled \(epoch 2 of 5\)', html)
    assert re.search(r'<input type="checkbox" name="train"[^>]*checked', html)


# --- The feed -------------------------------------------------------------------------------------


def test_the_feed_gives_the_windows_bookings_with_owner_team_and_title(owner, outsider, cluster):
    inside = book(owner, cluster["node1"][:2], title="fine-tune", preemptible=True)
    book(owner, cluster["node1"][:1], start=NEXT_SLOT + timedelta(days=8))  # next week

    events = [e for e in feed(page_client(outsider)).json() if e.get("display") != "background"]

    assert [e["id"] for e in events] == [str(inside.pk)]
    event = events[0]
    assert event["resourceIds"] == [str(g.pk) for g in cluster["node1"][:2]]
    assert (event["start"], event["end"]) == (NEXT_SLOT.isoformat(), (NEXT_SLOT + SLOT).isoformat())
    assert event["extendedProps"]["owner"] == "owner" and event["extendedProps"]["team"] == "vision"
    assert event["title"] == "fine-tune · owner"
    assert event["extendedProps"]["title"] == "fine-tune"
    assert "preemptible" in event["classNames"]
    assert event["backgroundColor"] == inside.team.colour


def test_the_feed_shows_job_progress_to_the_team_but_not_to_other_teams(owner, teammate, outsider, cluster):
    reservation = book(owner, cluster["node1"][:1])
    TrainingJob.objects.create(reservation=reservation, spec={}, epochs=8, epoch=3, status="running")

    def job_of(user):
        return next(e for e in feed(page_client(user)).json() if e["id"] == str(reservation.pk))["extendedProps"]["job"]

    assert job_of(teammate) == {"status": "running", "epoch": 3, "epochs": 8}
    assert job_of(outsider) is None


def test_the_feed_filters_by_team_node_and_mine(owner, teammate, outsider, cluster):
    mine = book(owner, cluster["node1"][:1])
    teammates = book(teammate, cluster["node2"][:1])
    others = book(outsider, cluster["node2"][1:2])
    client = page_client(owner)

    def ids(**params):
        return {int(e["id"]) for e in feed(client, **params).json() if e.get("display") != "background"}

    assert ids() == {mine.pk, teammates.pk, others.pk}
    assert ids(team="vision") == {mine.pk, teammates.pk}
    assert ids(node=cluster["node2"][0].node_id) == {teammates.pk, others.pk}
    assert ids(mine="1") == {mine.pk}


def test_the_feed_shades_the_past_and_unhealthy_gpus(owner, cluster):
    gpu = cluster["node1"][2]
    gpu.healthy = False
    gpu.save()

    background = {e["id"]: e for e in feed(page_client(owner)).json() if e.get("display") == "background"}

    assert background["past"]["end"] == FROZEN_NOW.isoformat()
    assert background[f"unhealthy-{gpu.pk}"]["resourceIds"] == [str(gpu.pk)]


def test_the_feed_reads_a_window_without_offset_in_the_calendars_zone(owner, cluster):
    reservation = book(owner, cluster["node1"][:1])  # 10:00-12:00 UTC = 11:00-13:00 in Berlin
    client = page_client(owner)

    def ids(start, end, zone):
        events = client.get("/calendar/events/", {"start": start, "end": end, "zone": zone}).json()
        return [e["id"] for e in events if e.get("display") != "background"]

    assert ids("2030-01-07T12:30:00", "2030-01-07T14:00:00", "Europe/Berlin") == [str(reservation.pk)]
    assert ids("2030-01-07T12:30:00", "2030-01-07T14:00:00", "UTC") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "start"),
        ({"start": "yesterday", "end": "2030-01-08T00:00:00Z"}, "start"),
        ({"start": "2030-01-08T00:00:00Z", "end": "2030-01-07T00:00:00Z"}, "end"),
        ({"start": "2030-01-01T00:00:00Z", "end": "2030-06-01T00:00:00Z"}, "end"),
        ({**WEEK, "node": "x"}, "node"),
    ],
)
def test_the_feed_answers_a_bad_window_with_a_400_naming_the_field(owner, cluster, params, field):
    response = page_client(owner).get("/calendar/events/", params)

    assert response.status_code == 400
    assert field in response.json()["errors"]


# --- The booking form -----------------------------------------------------------------------------


def test_the_form_books_through_the_service_and_answers_in_place(owner, cluster):
    response = post_form(page_client(owner), form_data(cluster["node1"][:1], title="from the calendar"))

    assert response.status_code == 201
    reservation = Reservation.objects.get()
    assert (reservation.title, reservation.start, reservation.user) == ("from the calendar", NEXT_SLOT, owner)
    assert AuditEntry.objects.filter(reservation=reservation, action="create", actor=owner).exists()
    html = response.content.decode()
    assert f"Booked #{reservation.pk}" in html and "node1/gpu0" in html
    assert response["HX-Trigger"] == "booked"
    assert "<html" not in html  # a fragment for the side panel


def test_without_javascript_the_form_answers_with_a_whole_page(owner, cluster):
    response = post_form(page_client(owner), form_data(cluster["node1"][:1]), htmx=False)

    assert response.status_code == 201
    assert "<html" in response.content.decode() and "Booked #" in response.content.decode()


def test_the_date_and_slot_are_read_in_the_viewers_zone(owner, cluster):
    berlin = NEXT_SLOT + timedelta(hours=1)  # 11:00 in Berlin is the 10:00 UTC slot

    response = post_form(page_client(owner, "Europe/Berlin"), form_data(cluster["node1"][:1], start=berlin))

    assert response.status_code == 201
    assert Reservation.objects.get().start == NEXT_SLOT
    assert "Europe/Berlin" in response.content.decode()


def test_a_start_off_the_slot_grid_or_in_the_past_is_refused_naming_the_field(owner, cluster):
    client = page_client(owner)

    off_grid = post_form(client, form_data(cluster["node1"][:1], start=NEXT_SLOT + timedelta(hours=1)))
    past = post_form(client, form_data(cluster["node1"][:1], start=NEXT_SLOT - SLOT))

    assert off_grid.status_code == 400 and "slot boundary" in off_grid.content.decode()
    assert past.status_code == 400 and "in the past" in past.content.decode()
    assert not Reservation.objects.exists()


def test_missing_fields_are_named(owner, cluster):
    response = post_form(page_client(owner), {"slots": "0"})

    html = response.content.decode()
    assert response.status_code == 400
    assert "GPUs: Pick at least one GPU." in html and "Date: This field is required (or tick" in html
    assert "Slots: Ensure this value is greater than or equal to 1." in html


def test_high_priority_without_the_right_is_refused_in_place(owner, cluster):
    response = post_form(page_client(owner), form_data(cluster["node1"][:1], priority="high"))

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Reservation.objects.exists()


def test_also_book_n_more_gpus_on_the_same_node(owner, teammate, cluster):
    book(teammate, cluster["node1"][1:2])

    response = post_form(page_client(owner), form_data(cluster["node1"][:1], more=2))

    assert response.status_code == 201
    gpus = sorted(Reservation.objects.get(user=owner).allocations.values_list("gpu_id", flat=True))
    assert gpus == [cluster["node1"][0].pk, cluster["node1"][2].pk, cluster["node1"][3].pk]


def test_asking_for_more_gpus_than_are_free_on_the_node_says_how_many_are(owner, teammate, cluster):
    book(teammate, cluster["node1"][1:3])

    response = post_form(page_client(owner), form_data(cluster["node1"][:1], more=3))

    assert response.status_code == 400
    assert "Only 1 more GPUs of node1 are free then." in response.content.decode()


def test_a_conflict_shows_whose_booking_is_in_the_way_and_a_suggestion_books_in_one_click(owner, outsider, cluster):
    book(outsider, cluster["node1"][:1], title="theirs")
    client = page_client(owner)

    response = post_form(client, form_data(cluster["node1"][:1], title="mine"))

    assert response.status_code == 409
    html = response.content.decode()
    assert "already booked" in html and "of outsider (normal) on node1/gpu0" in html
    suggestions = hidden_forms(html)
    assert suggestions, html
    first = dict(suggestions[0])
    assert first["title"] == "mine"  # the rest of the form comes along
    booked = client.post("/book/", _multi(suggestions[0]), headers={"HX-Request": "true"})
    assert booked.status_code == 201, booked.content.decode()
    reservation = Reservation.objects.get(user=owner)
    assert reservation.title == "mine"
    assert "Booked #" in booked.content.decode()


def _multi(pairs):
    data = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return data


def test_a_preempting_booking_says_whose_bookings_it_takes_before_it_is_confirmed(high_booker, outsider, cluster, settings):
    victim = book(outsider, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low", title="sweep")
    client = page_client(high_booker)
    data = form_data(cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="high")

    preview = post_form(client, data)

    html = preview.content.decode()
    assert preview.status_code == 200
    assert f"#{victim.pk} sweep of <strong>outsider</strong>" in html and "low priority" in html
    assert "moved to another free window" in html and "outsider is told now, 2 h 43 min before" in html
    assert not Reservation.objects.filter(user=high_booker).exists()  # nothing yet

    confirm = dict(_multi(hidden_forms(html)[0]))
    assert confirm["confirm_preempt"] == ["on"]
    booked = client.post("/book/", confirm, headers={"HX-Request": "true"})

    assert booked.status_code == 201, booked.content.decode()
    mine = Reservation.objects.get(user=high_booker)
    assert mine.start == NEXT_SLOT + SLOT and mine.priority == "high"
    victim.refresh_from_db()
    # Moved whole, off the taken GPU's window (to other GPUs at the same time, or later).
    assert victim.status == "confirmed"
    assert not victim.allocations.filter(gpu=cluster["node1"][0], start__lt=mine.end, end__gt=mine.start).exists()


def test_a_booking_the_rules_forbid_to_preempt_is_a_conflict_not_a_preview(high_booker, outsider, cluster):
    book(outsider, cluster["node1"][:1], priority="normal")  # not preemptible

    response = post_form(page_client(high_booker), form_data(cluster["node1"][:1], priority="high"))

    assert response.status_code == 409
    assert "cannot be preempted" in response.content.decode()


def test_the_waitlist_box_books_a_waiting_request_and_the_calendar_lists_it_apart(owner, outsider, cluster):
    book(outsider, cluster["node1"][:1])
    client = page_client(owner)

    response = post_form(client, form_data(cluster["node1"][:1], title="patient", waitlist="on"))

    assert response.status_code == 201
    waiting = Reservation.objects.get(user=owner)
    assert waiting.status == "waitlisted"
    assert "on the waitlist" in response.content.decode()
    page = client.get("/").content.decode()
    waitlist_section = page.split('id="waitlist-heading"')[1]
    assert f"#{waiting.pk} patient" in waitlist_section
    assert str(waiting.pk) not in [e["id"] for e in feed(client).json()]


@pytest.fixture
def dataset(tmp_path, settings):
    root = tmp_path / "datasets"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "data.yaml").write_text("path: .\n")
    settings.TRAINING_DATA_ROOTS = [root.resolve()]
    return root / "demo" / "data.yaml"


def test_the_form_offers_the_datasets_under_the_roots_the_demo_one_first_and_fills_it_in(owner, cluster, dataset):
    root = dataset.parent.parent
    for folder in ("coco", "team/parts", "demo/images"):
        (root / folder).mkdir(parents=True)
        (root / folder / "data.yaml").write_text("path: .\n")

    html = page_client(owner).get("/").content.decode()

    offered = re.findall(r'<option value="([^"]+)"></option>', re.search(r'<datalist id="dataset-choices">.*?</datalist>', html).group(0))
    assert offered == [str(root / "demo" / "data.yaml"), str(root / "coco" / "data.yaml"), str(root / "team" / "parts" / "data.yaml")]
    assert re.search(rf'<input type="text" name="data" value="{re.escape(str(dataset))}"[^>]* list="dataset-choices"', html)


def test_without_datasets_the_dataset_box_is_empty_and_offers_none(owner, cluster):
    html = page_client(owner).get("/").content.decode()

    assert "<datalist" not in html
    assert re.search(r'<input type="text" name="data"(?![^>]*value=)[^>]*>', html)


def test_a_booking_can_carry_a_training_job(owner, cluster, dataset):
    data = form_data(cluster["node1"][:1], train="on", model="yolov8n.yaml", data=str(dataset), epochs=3, imgsz=64, batch=4)

    response = post_form(page_client(owner), data)

    assert response.status_code == 201, response.content.decode()
    job = TrainingJob.objects.get()
    assert (job.epochs, job.spec["imgsz"], job.spec["batch"]) == (3, 64, 4)
    assert job.reservation.user == owner


def test_a_bad_job_names_the_field_and_books_nothing(owner, cluster, dataset):
    data = form_data(cluster["node1"][:1], train="on", model="yolov8n.yaml", data="/etc/passwd", epochs=3)

    response = post_form(page_client(owner), data)

    assert response.status_code == 400
    assert "Dataset (data.yaml):" in response.content.decode()
    assert not Reservation.objects.exists() and not TrainingJob.objects.exists()


def test_the_form_needs_its_csrf_token(owner, cluster):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post("/book/", form_data(cluster["node1"][:1]))

    assert response.status_code == 403
    assert not Reservation.objects.exists()


# --- Odd input: a clear answer, never a 500 -------------------------------------------------------


def test_unicode_digits_are_not_ids(owner, cluster):
    client = page_client(owner)

    assert client.get("/?resume=²").status_code == 200
    assert feed(client, node="²").status_code == 400
    response = post_form(client, {**form_data(cluster["node1"][:1]), "gpus": ["²"]})
    assert response.status_code == 400 and "GPUs: “²” is not a valid value." in response.content.decode()


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00Z", "9999-12-30T00:00:00Z"])
def test_a_window_far_from_now_is_a_400(owner, cluster, start):
    end = start.replace("T00", "T12")

    response = page_client(owner).get("/calendar/events/", {"start": start, "end": end})

    assert response.status_code == 400 and "start" in response.json()["errors"]


def test_a_date_outside_the_horizon_or_too_many_slots_name_the_field(owner, cluster):
    client = page_client(owner, "America/New_York")
    far = {**form_data(cluster["node1"][:1]), "date": "9999-12-31", "slot": "22:00"}
    many = form_data(cluster["node1"][:1], slots=10**9)

    far_response, many_response = post_form(client, far), post_form(client, many)

    assert far_response.status_code == 400 and "Date: Pick a day from today to" in far_response.content.decode()
    assert many_response.status_code == 400 and "Slots: At most 337 slots" in many_response.content.decode()


def test_a_wall_time_that_happens_twice_is_read_as_the_one_on_the_slot_grid(owner, cluster, settings):
    settings.BOOKING_HORIZON_DAYS = 400
    # 2030-11-03 01:00 in New York happens twice: 05:00 UTC (EDT), then 06:00 UTC (EST), a boundary.
    data = {**form_data(cluster["node1"][:1]), "date": "2030-11-03", "slot": "01:00"}

    response = post_form(page_client(owner, "America/New_York"), data)

    assert response.status_code == 201, response.content.decode()
    assert Reservation.objects.get().start.isoformat() == "2030-11-03T06:00:00+00:00"


def test_a_wall_time_the_clocks_skip_is_refused_naming_the_slot(owner, cluster, settings):
    settings.BOOKING_HORIZON_DAYS = 400
    data = {**form_data(cluster["node1"][:1]), "date": "2030-03-31", "slot": "01:00"}

    response = post_form(page_client(owner, "Europe/London"), data)

    assert response.status_code == 400
    assert "There is no 01:00 on 2030-03-31 in your zone" in response.content.decode()
    assert not Reservation.objects.exists()


def test_no_preemption_preview_for_a_booking_the_rules_refuse_anyway(high_booker, outsider, cluster):
    book(outsider, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low")
    off_grid = NEXT_SLOT + SLOT + timedelta(hours=1)

    response = post_form(page_client(high_booker), form_data(cluster["node1"][:1], start=off_grid, priority="high"))

    assert response.status_code == 400
    html = response.content.decode()
    assert "slot boundary" in html and "would preempt" not in html


def test_a_confirmation_for_other_bookings_than_those_in_the_way_shows_them_again(high_booker, outsider, cluster):
    victim = book(outsider, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low")
    data = form_data(cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="high", confirm_preempt="on", victims="999")

    response = post_form(page_client(high_booker), data)

    html = response.content.decode()
    assert response.status_code == 200 and "changed since you looked" in html and f"#{victim.pk}" in html
    assert not Reservation.objects.filter(user=high_booker).exists()


def test_a_member_of_several_teams_is_asked_which_to_charge(owner, other_team, cluster):
    other_team.memberships.create(user=owner)
    client = page_client(owner)

    refused = post_form(client, form_data(cluster["node1"][:1]))
    charged = post_form(client, form_data(cluster["node1"][:1], team=other_team.pk))

    assert refused.status_code == 400 and "You belong to several teams: name one." in refused.content.decode()
    assert charged.status_code == 201 and Reservation.objects.get().team == other_team


def test_start_now_books_the_rest_of_the_current_slot_as_the_api_does(owner, cluster):
    data = {**form_data(cluster["node1"][:1], slots=2), "start_now": "on", "date": "", "slot": ""}

    response = post_form(page_client(owner), data)

    assert response.status_code == 201, response.content.decode()
    reservation = Reservation.objects.get()
    assert (reservation.start, reservation.end) == (FROZEN_NOW, NEXT_SLOT + SLOT)


def test_the_form_offers_the_teams_models_to_serve(owner, outsider, cluster, defects):
    mine = page_client(owner).get("/").content.decode()
    theirs = page_client(outsider).get("/").content.decode()

    assert 'value="defects"' in mine and 'value="defects:2"' in mine and "latest: version 2" in mine
    assert 'value="defects"' not in theirs and "no registered models yet" in theirs


def test_a_booking_can_serve_models(owner, cluster, defects):
    data = form_data(cluster["node1"][:1], serve="on", serve_models=["defects"], preload="on", max_batch=4)

    response = post_form(page_client(owner), data)

    assert response.status_code == 201, response.content.decode()
    serving = Serving.objects.get()
    assert serving.spec == {"models": ["defects"], "preload": ["defects"], "max_batch": 4, "max_delay_ms": 10, "memory_budget_mb": None}
    assert serving.reservation.user == owner


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"serve": "on"}, "Pick at least one model to serve."),
        ({"serve": "on", "serve_models": ["people"]}, "Select a valid choice"),
        ({"serve": "on", "serve_models": ["defects"], "train": "on", "model": "yolov8n.yaml"}, "trains or serves, not both"),
    ],
)
def test_a_bad_serve_names_the_field_and_books_nothing(owner, cluster, defects, extra, words):
    response = post_form(page_client(owner), form_data(cluster["node1"][:1], **extra))

    assert response.status_code == 400
    assert words in response.content.decode()
    assert not Reservation.objects.exists() and not Serving.objects.exists()


def test_a_model_name_two_of_your_teams_use_is_one_choice_naming_both(owner, other_team, defects):
    Membership.objects.create(team=other_team, user=owner)
    theirs = Model.objects.create(team=other_team, name="defects")
    ModelVersion.objects.create(model=theirs, version=1, imgsz=64, class_names=["a"], size=1, sha256="f" * 64)

    choices = dict(servable_models(owner))

    assert list(choices) == ["defects", "defects:2", "defects:1"]
    assert choices["defects"] == f"defects (latest: version 2) · {', '.join(sorted([defects.team.slug, other_team.slug]))}"
    assert choices["defects:2"] == f"defects version 2 · {defects.team.slug}"


def past_jobs(user, count, first_id=0):
    """`count` jobs with checkpoints, each of a past booking of the user's team (one job a booking),
    oldest first."""
    team = user.teams.get()
    start = FROZEN_NOW - timedelta(days=400)
    bookings = Reservation.objects.bulk_create(
        Reservation(user=user, team=team, start=start + i * SLOT, end=start + (i + 1) * SLOT, gpu_count=1,
                    status=Reservation.Status.COMPLETED)
        for i in range(first_id, first_id + count)
    )
    return [
        TrainingJob.objects.create(reservation=r, spec={}, epochs=5, checkpoint=f"/x/{r.pk}.pt", checkpoint_epoch=1)
        for r in bookings
    ]


def test_the_resume_list_offers_the_recent_jobs_and_the_chosen_one_and_accepts_any(owner, cluster):
    jobs = past_jobs(owner, RecentChoiceField.offered + 10)
    oldest, newest = jobs[0], jobs[-1]

    html = page_client(owner).get("/").content.decode()
    chosen = page_client(owner).get(f"/?resume={oldest.pk}").content.decode()
    form = BookingForm(data={"resume_from": str(oldest.pk)}, user=owner)
    form.is_valid()

    listed = re.findall(r'<option value="(\d+)"[^>]*>job ', html)
    assert len(listed) == RecentChoiceField.offered and listed[0] == str(newest.pk)
    assert str(oldest.pk) not in listed
    assert re.search(rf'<option value="{oldest.pk}" selected>job {oldest.pk}:', chosen)
    assert "resume_from" not in form.errors and form.cleaned_data["resume_from"] == oldest


def test_the_calendar_page_costs_the_same_queries_with_many_jobs(owner, cluster):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert page_client(owner).get("/").status_code == 200
        return len(captured)

    past_jobs(owner, 10)
    few = queries()
    past_jobs(owner, 200, first_id=10)
    assert queries() == few


def test_the_resume_search_finds_an_older_job_by_number_or_title_among_the_teams_only(owner, outsider, cluster):
    jobs = past_jobs(owner, RecentChoiceField.offered + 10)
    oldest = jobs[0]
    Reservation.objects.filter(pk=oldest.reservation_id).update(title="baseline yolov8n, fog images")
    theirs = past_jobs(outsider, 1, first_id=500)[0]
    Reservation.objects.filter(pk=theirs.reservation_id).update(title="fog images, their run")
    client = page_client(owner)

    def offered(search):
        response = client.get("/book/resume-options/", {"q": search})
        assert response.status_code == 200
        return re.findall(r'<option value="(\d*)">', response.content.decode())  # not the disabled note

    assert offered(str(oldest.pk)) == ["", str(oldest.pk)]
    assert offered(f"#{oldest.pk}") == ["", str(oldest.pk)]
    assert offered(f"Job {oldest.pk}") == ["", str(oldest.pk)]
    assert offered("FOG") == ["", str(oldest.pk)]  # the outsider's team's job is not offered
    assert offered(str(theirs.pk)) == [""]
    newest_first = offered("")
    assert len(newest_first) == RecentChoiceField.offered + 1 and newest_first[1] == str(jobs[-1].pk)
    nothing = client.get("/book/resume-options/", {"q": "no such run"}).content.decode()
    assert "No job of your teams with a checkpoint matches" in nothing


def test_the_resume_search_refuses_a_search_longer_than_any_title_and_asks_to_sign_in(owner, cluster):
    too_long = page_client(owner).get("/book/resume-options/", {"q": "x" * 101})

    assert too_long.status_code == 400 and "q" in too_long.json()
    assert Client().get("/book/resume-options/", {"q": "1"}).status_code == 302


def test_the_booking_form_has_the_resume_search_outside_the_booking_it_posts(owner, cluster):
    html = page_client(owner).get("/").content.decode()

    search = re.search(r'<input type="search" id="resume-search"[^>]*>', html, re.S).group(0)
    assert 'hx-get="/book/resume-options/"' in search and 'hx-target="#id_resume_from"' in search
    assert 'form="resume-search-form"' in search  # not one of the booking form's fields


def test_the_resume_search_finds_digits_in_titles_and_keeps_the_job_already_chosen(owner, cluster):
    jobs = past_jobs(owner, 3)
    Reservation.objects.filter(pk=jobs[0].reservation_id).update(title="replay of 2024 data")
    client = page_client(owner)

    by_year = client.get("/book/resume-options/", {"q": "2024"}).content.decode()
    keeping = client.get("/book/resume-options/", {"q": "nothing like it", "resume_from": jobs[1].pk}).content.decode()

    assert re.findall(r'<option value="(\d+)"', by_year) == [str(jobs[0].pk)]
    assert re.search(rf'<option value="{jobs[1].pk}" selected>job {jobs[1].pk}:', keeping)
