"""The pages in a real browser: Debian's Chromium driven by Playwright against the live server and
PostgreSQL. Each test asserts what the page shows and what the database holds; every page must run
without a JavaScript error or a console error (a Content-Security-Policy violation is one), which
the `browsing` fixture checks after each test.

Time is not frozen (the live server runs on the real clock): bookings go two days ahead, on slot
boundaries computed with reservations.policy, so no test runs near a boundary.

With SCREENSHOTS_DIR set, the tests also save the full-page screenshots of docs/screenshots/.
"""

import re
from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone
from playwright.sync_api import expect

from reservations import policy, recurrence
from reservations.models import GPU, Notice, Reservation, Series, Team
from reservations.services import Device, node_register, notice_send, team_quota_set
from serving.models import Serving
from trainer.models import TrainingJob

from web.forms import WEEKDAY_CODES

from ..support import book, make_user, wait_for
from .browser import LAPTOP, PHONE, browser, browsing  # noqa: F401  (fixtures)
from .ldap_server import PASSWORDS, directory, slapd  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WRONG_PASSWORD = "Please enter a correct username and password"
TRACKS = ["node1 (online)", *[f"gpu{i} · A100" for i in range(4)], "node2 (online)", *[f"gpu{i} · A100" for i in range(4)]]


def day_ahead(days=2, hour=10):
    """A slot boundary `days` ahead at about `hour` UTC: far from now and from any boundary."""
    day = (timezone.now() + timedelta(days=days)).date()
    return policy.ceil_to_slot(datetime(day.year, day.month, day.day, hour, tzinfo=dt_timezone.utc))


def colour_teams():
    """Teams in the colours an admin would give them (all start with the same default)."""
    Team.objects.filter(slug="vision").update(colour="#1f5fbf")
    Team.objects.filter(slug="nlp").update(colour="#d1495b")


def signed_in_user_ids():
    return {session.get_decoded().get("_auth_user_id") for session in Session.objects.all()} - {None}


def open_calendar(browsing, user, zone="UTC", **kwargs):
    page = browsing.page(user, zone=zone, **kwargs)
    page.goto(browsing.url("/"))
    expect(page.locator(".ec-timeline .ec-body")).to_be_visible()
    return page


def show_day(page, moment):
    """The calendar's day view on the day of `moment` (in the calendar's zone)."""
    page.get_by_role("button", name="Day", exact=True).click()
    page.evaluate("day => window.gpuCalendar.gotoDate(day)", moment.strftime("%Y-%m-%d"))
    expect(page.locator(".ec-timeline .ec-col-head time")).to_have_attribute("datetime", moment.strftime("%Y-%m-%d"))


def drag_across(page, gpu, start, slots):
    """Press the mouse on `gpu`'s track at `start`'s slot and release it `slots` slots later, in the
    day view. The track is the body row whose row header names the GPU under its node."""
    heads = page.locator(".ec-body .ec-sidebar .ec-row-head")
    names = [re.sub(r"[−+\s]+", " ", text).strip() for text in heads.all_inner_texts()]
    row = names.index(f"gpu{gpu.index} · A100", names.index(f"{gpu.node.hostname} (online)"))
    cell = page.locator(".ec-body .ec-grid .ec-day").nth(row).bounding_box()
    per_day = timedelta(days=1) // policy.slot_length()
    first = (start - start.replace(hour=0, minute=0)) // policy.slot_length()
    y = cell["y"] + cell["height"] / 2

    def x(slot):  # the middle of a slot's cell
        return cell["x"] + (slot + 0.5) * cell["width"] / per_day

    # Event Calendar's own reading of the point: the GPU and the slot it is over.
    found = page.evaluate(
        "([x, y]) => { const d = window.gpuCalendar.dateFromPoint(x, y); return [d.resource.id, d.date.toISOString()]; }",
        [x(first), y],
    )
    assert found[0] == str(gpu.pk) and found[1].startswith(start.strftime("%Y-%m-%dT%H")), found
    page.mouse.move(x(first), y)
    page.mouse.down()
    page.mouse.move(x(first + slots - 1), y, steps=8)
    page.mouse.up()


def fill_form(page, gpu, start_local, slots=1, title=""):
    page.locator("#id_gpus").select_option(str(gpu.pk))
    page.get_by_label("Date").fill(start_local.strftime("%Y-%m-%d"))
    page.get_by_label("Slot start").fill(start_local.strftime("%H:%M"))
    page.get_by_label("Slots", exact=True).fill(str(slots))
    page.get_by_label("Title").fill(title)


def tab_to(page, target, limit=80):
    """Press Tab until `target` has the focus; fail if it never gets it."""
    for _ in range(limit):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} never got the focus in {limit} Tabs")


# --- Signing in -------------------------------------------------------------------------------------


def test_a_person_signs_in_sees_a_track_per_gpu_under_its_node_and_signs_out(browsing, owner, cluster):
    page = browsing.page()

    page.goto(browsing.url("/"))
    expect(page).to_have_url(browsing.url("/login/?next=/"))
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("pw-owner")
    browsing.screenshot(page, "sign-in.png")
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(browsing.url("/"))
    expect(page.get_by_role("heading", name="GPU calendar")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("owner")
    expect(page.locator(".ec-body .ec-sidebar .ec-row-head > span:not(.ec-expander)")).to_have_text(TRACKS)
    # The page's own scripts came from the live server's static files and ran.
    assert page.request.get(browsing.url("/static/js/calendar.js")).ok
    assert page.evaluate("typeof window.gpuCalendar.getView") == "function"
    assert signed_in_user_ids() == {str(owner.pk)}

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(browsing.url("/login/"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert signed_in_user_ids() == set()
    page.goto(browsing.url("/"))
    expect(page).to_have_url(browsing.url("/login/?next=/"))


def test_a_wrong_password_shows_the_form_error_and_signs_nobody_in(browsing, owner):
    page = browsing.page()
    page.goto(browsing.url("/login/"))

    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_contain_text(WRONG_PASSWORD)
    expect(page).to_have_url(browsing.url("/login/"))
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    assert signed_in_user_ids() == set()


def test_a_directory_user_signs_in_in_the_browser_and_lands_on_the_calendar(browsing, directory, cluster):
    page = browsing.page()
    page.goto(browsing.url("/login/"))
    expect(page.get_by_text("Use your company account")).to_be_visible()

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(browsing.url("/"))
    expect(page.get_by_role("heading", name="GPU calendar")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("alice")
    # Her directory group made her a member of "vision": she may book.
    expect(page.locator("#no-team")).to_have_count(0)
    alice = Team.objects.get(slug="vision").members.get()
    assert alice.username == "alice" and signed_in_user_ids() == {str(alice.pk)}


# --- Booking on the calendar --------------------------------------------------------------------


def test_dragging_across_a_gpus_track_fills_the_form_and_books_without_a_reload(
    browsing, owner, teammate, outsider, cluster
):
    start = day_ahead()
    gpu = cluster["node1"][1]
    # Other bookings that day: another team's, a preemptible one of the same team, one of mine.
    colour_teams()
    book(outsider, cluster["node2"][:2], start=start - policy.slot_length(), slots=3, title="nlp sweep")
    book(teammate, cluster["node1"][2:3], start=start, slots=4, title="detector", priority="low", preemptible=True)
    book(owner, cluster["node1"][3:4], start=start + 3 * policy.slot_length(), slots=2, title="eval run")
    page = open_calendar(browsing, owner)
    page.evaluate("window.notReloaded = true")
    show_day(page, start)
    expect(page.locator(".ec-event", has_text="nlp sweep · outsider")).to_have_count(2)  # one per GPU

    drag_across(page, gpu, start, slots=2)

    expect(page.locator("#id_gpus")).to_have_values([str(gpu.pk)])
    expect(page.get_by_label("Date")).to_have_value(start.strftime("%Y-%m-%d"))
    expect(page.get_by_label("Slot start")).to_have_value(start.strftime("%H:%M"))
    expect(page.get_by_label("Slots", exact=True)).to_have_value("2")
    expect(page.get_by_label("Title")).to_be_focused()
    # The quota preview follows the selection (calendar.js tells it; set from a script, fields fire no "change").
    expect(page.locator("#quota-preview")).to_contain_text("Vision has no quota")
    page.keyboard.type("dragged booking")
    browsing.screenshot(page, "booking-form.png")
    page.get_by_role("button", name="Book", exact=True).click()

    expect(page.locator("#booked")).to_contain_text("Booked #")
    reservation = Reservation.objects.get(user=owner, title="dragged booking")
    expect(page.locator("#booked")).to_contain_text(f"Booked #{reservation.pk}")
    expect(page.locator("#booked")).to_contain_text("node1/gpu1")
    expect(page.locator(".ec-event", has_text="dragged booking · owner")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    assert (reservation.start, reservation.end) == (start, start + 2 * policy.slot_length())
    assert [a.gpu_id for a in reservation.allocations.all()] == [gpu.pk]

    expect(page.locator(".ec-event.mine")).to_have_count(2)  # this one and "eval run"
    browsing.screenshot(page, "calendar.png")


def test_a_conflict_names_whose_booking_is_in_the_way_and_a_suggestion_books_in_one_click(
    browsing, owner, outsider, cluster
):
    start = day_ahead()
    gpu = cluster["node1"][0]
    colour_teams()
    theirs = book(outsider, [gpu], start=start, title="theirs")
    page = open_calendar(browsing, owner)
    show_day(page, start)
    expect(page.locator(".ec-event", has_text="theirs · outsider")).to_be_visible()
    browsing.expect_status(409)

    fill_form(page, gpu, start, title="mine")
    page.get_by_role("button", name="Book", exact=True).click()

    conflict = page.locator("#conflict")
    expect(conflict).to_contain_text("Not booked:")
    expect(conflict).to_contain_text(f"#{theirs.pk} of outsider (normal) on node1/gpu0")
    suggestion = page.locator("#conflict button.suggestion").first
    expect(suggestion).to_be_visible()
    browsing.screenshot(page, "conflict.png")
    offered = page.locator("#conflict .suggestions form").first
    date = offered.locator("input[name=date]").get_attribute("value")
    slot = offered.locator("input[name=slot]").get_attribute("value")
    gpus = [int(i.get_attribute("value")) for i in offered.locator("input[name=gpus]").all()]
    assert not Reservation.objects.filter(user=owner).exists()

    suggestion.click()

    expect(page.locator("#booked")).to_contain_text("Booked #")
    mine = Reservation.objects.get(user=owner)
    expect(page.locator("#booked")).to_contain_text(f"Booked #{mine.pk}")
    assert mine.title == "mine"
    assert mine.start == datetime.fromisoformat(f"{date}T{slot}").replace(tzinfo=dt_timezone.utc)
    assert sorted(mine.allocations.values_list("gpu_id", flat=True)) == gpus
    assert Reservation.objects.get(pk=theirs.pk).status == "confirmed"


def test_a_preempting_booking_shows_whose_booking_it_takes_and_books_only_when_confirmed(
    browsing, high_booker, outsider, cluster
):
    start = day_ahead()
    gpu = cluster["node1"][1]
    colour_teams()
    victim = book(outsider, [gpu], start=start, title="overnight sweep", priority="low")
    page = open_calendar(browsing, high_booker)
    show_day(page, start)

    fill_form(page, gpu, start, title="deadline run")
    page.locator("#id_priority").select_option("high")
    page.get_by_role("button", name="Book", exact=True).click()

    preview = page.locator("#preempt-preview")
    expect(preview).to_contain_text("This booking would preempt 1 booking")
    expect(preview).to_contain_text(f"#{victim.pk} overnight sweep of outsider (low priority")
    expect(preview).to_contain_text("outsider is told now,")
    expect(preview).to_be_in_viewport()
    browsing.screenshot(page, "preemption.png")
    assert not Reservation.objects.filter(user=high_booker).exists()

    page.get_by_role("button", name="Book and preempt").click()

    expect(page.locator("#booked")).to_contain_text("Booked #")
    mine = Reservation.objects.get(user=high_booker)
    assert (mine.start, mine.priority) == (start, "high")
    assert list(mine.allocations.values_list("gpu_id", flat=True)) == [gpu.pk]
    victim.refresh_from_db()
    assert not victim.allocations.filter(gpu=gpu, start__lt=mine.end, end__gt=mine.start, live=True).exists()


def test_the_form_takes_times_in_the_browsers_zone_and_says_which(browsing, owner, cluster):
    start = day_ahead()
    berlin = start.astimezone(ZoneInfo("Europe/Berlin"))
    # No zone cookie: the page finds the browser's zone itself (app.js sets the cookie and reloads).
    page = open_calendar(browsing, owner, zone="Europe/Berlin", zone_cookie=False)

    expect(page.locator("#zone-name")).to_have_text("Europe/Berlin")
    fill_form(page, cluster["node2"][3], berlin, title="berlin")
    page.get_by_role("button", name="Book", exact=True).click()

    expect(page.locator("#booked")).to_contain_text(berlin.strftime("%H:%M"))
    expect(page.locator("#booked")).to_contain_text("(Europe/Berlin)")
    reservation = Reservation.objects.get(user=owner)
    assert reservation.start == start and berlin.hour != start.hour
    assert [a.gpu_id for a in reservation.allocations.all()] == [cluster["node2"][3].pk]


def test_someone_in_no_team_sees_why_they_cannot_book(browsing, cluster):
    loner = make_user("loner")
    page = open_calendar(browsing, loner)
    browsing.expect_status(400)

    expect(page.locator("#no-team")).to_contain_text("You belong to no team")
    fill_form(page, cluster["node1"][0], day_ahead())
    page.get_by_role("button", name="Book", exact=True).click()

    expect(page.locator("#form-errors")).to_contain_text("belong to no team")
    assert not Reservation.objects.exists()


# --- Fair sharing: quotas and borrowed time -------------------------------------------------------------


@pytest.fixture
def vision_near_its_limit(settings, team, teammate, cluster):
    """vision may book 12 GPU-hours a week and has booked 8 two days ahead (teammate: 2 GPUs of node2
    for 2 slots). The quota week is moved to start today (QUOTA_WEEK_START), as the calendar's week
    does, so that "this week" holds the bookings two days ahead whatever day the tests run."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    monday = datetime(1970, 1, 5, tzinfo=dt_timezone.utc)
    settings.QUOTA_WEEK_OFFSET_MINUTES = int((today - monday) % timedelta(days=7) // timedelta(minutes=1))
    assert policy.week_start(timezone.now()) == today
    colour_teams()
    team_quota_set(team=team, actor=None, gpu_hours_per_week=12, borrow_gpu_hours_per_week=40)
    return book(teammate, cluster["node2"][:2], start=day_ahead(), slots=2, title="in-quota run")


def over_the_quota(page, cluster, start):
    """The form filled for 2 GPUs of node2 for 2 slots at `start` (8 GPU-hours: 4 over the quota)
    after the preview said 1 GPU fits."""
    fill_form(page, cluster["node2"][2], start, slots=2, title="borrowed sweep")
    quota_preview = page.locator("#quota-preview")
    expect(quota_preview).to_contain_text("Within Vision's quota: this adds 4 GPU-h, 12 of 12 in week")
    expect(page.get_by_label("Borrow idle GPUs if over quota")).to_be_hidden()
    page.get_by_label("Also book this many more GPUs on the same node").fill("1")
    expect(quota_preview).to_contain_text("Over Vision's quota of 12 GPU-h in week")
    expect(quota_preview).to_contain_text("8 booked, this adds 8 (4 over)")


def test_over_the_quota_the_form_offers_to_borrow_and_books_as_borrowed_with_the_keyboard(
    browsing, owner, cluster, vision_near_its_limit
):
    start = day_ahead()
    page = open_calendar(browsing, owner, viewport=LAPTOP)
    standing = page.locator("#standing-vision")
    expect(standing).to_contain_text("Vision: 8 of 12 GPU-h this week · 0 GPUs now · borrowed 0 of 40 GPU-h")
    expect(standing.locator(".bar-used")).to_have_attribute("style", "width: 67%")
    over_the_quota(page, cluster, start)

    borrow = page.get_by_label("Borrow idle GPUs if over quota")
    expect(borrow).to_be_visible()
    # Highlighted: the box the preview points to.
    assert page.locator(".borrow-field").evaluate("el => getComputedStyle(el).borderTopStyle") == "solid"
    browsing.screenshot(page, "fair-share-preview.png")
    tab_to(page, borrow)
    page.keyboard.press("Space")
    expect(borrow).to_be_checked()
    expect(page.locator("#quota-preview")).to_contain_text("“Borrow idle GPUs” is ticked: it is booked as borrowed time")
    book_button = page.get_by_role("button", name="Book", exact=True)
    tab_to(page, book_button)
    page.keyboard.press("Enter")

    expect(page.locator("#booked")).to_contain_text("Booked #")
    borrowed = Reservation.objects.get(user=owner)
    assert borrowed.borrowed and borrowed.preemptible and borrowed.gpu_count == 2
    # The bar counts it at once (borrowed time counts against the borrow limit only).
    expect(standing).to_contain_text("Vision: 8 of 12 GPU-h this week · 0 GPUs now · borrowed 8 of 40 GPU-h")


def test_a_booking_refused_over_the_quota_is_booked_as_borrowed_in_one_keypress_and_shows_so(
    browsing, owner, cluster, vision_near_its_limit
):
    start = day_ahead()
    page = open_calendar(browsing, owner, viewport=LAPTOP)
    show_day(page, start)
    over_the_quota(page, cluster, start)
    browsing.expect_status(409)

    page.get_by_role("button", name="Book", exact=True).click()

    refused = page.locator("#quota-refused")
    expect(refused).to_contain_text("Not booked: over Vision's quota of 12 GPU-h in week")
    expect(refused).to_contain_text("may be reclaimed by a team within its quota, with 30 minutes' notice")
    assert not Reservation.objects.filter(user=owner).exists()
    book_borrowed = page.get_by_role("button", name="Book as borrowed")
    tab_to(page, book_borrowed)
    page.keyboard.press("Enter")

    expect(page.locator("#booked")).to_contain_text("Booked #")
    borrowed = Reservation.objects.get(user=owner)
    assert borrowed.borrowed and borrowed.title == "borrowed sweep" and borrowed.start == start
    # On the calendar: its own stripes, and the details say what borrowed time means.
    event = page.locator(".ec-event.borrowed", has_text="borrowed sweep · owner").first
    expect(event).to_be_visible()
    stripes = event.evaluate("el => getComputedStyle(el).backgroundImage")
    assert "repeating-linear-gradient(45deg" in stripes, stripes
    expect(page.locator(".ec-event:not(.borrowed)", has_text="in-quota run · teammate")).to_have_count(2)
    expect(page.locator(".legend")).to_contain_text("Borrowed (over quota, reclaimable)")
    expect(page.locator(".ec-event.borrowed")).to_have_count(2)  # node2's gpu2 and gpu3
    page.locator(".ec-event.borrowed").last.focus()
    expect(page.locator("#event-tip")).to_contain_text(
        "Borrowed: may be reclaimed by a team within its quota, with 30 minutes' notice"
    )
    browsing.screenshot(page, "fair-share-calendar.png")

    page.get_by_role("link", name=f"Open booking #{borrowed.pk}").click()

    expect(page.locator(".borrowed-note")).to_have_text(
        "Borrowed: may be reclaimed by a team within its quota, with 30 minutes' notice."
    )
    expect(page.locator("dl.facts")).to_contain_text("Borrowed: over the team's quota")
    browsing.screenshot(page, "fair-share-booking.png")


def test_on_a_phone_the_quota_bar_the_preview_and_a_borrowed_booking_fit_the_width(
    browsing, owner, cluster, vision_near_its_limit
):
    borrowed = book(
        owner, cluster["node2"][2:], start=day_ahead(), slots=2, borrow=True, title="borrowed sweep"
    )
    page = open_calendar(browsing, owner, viewport=PHONE)
    expect(page.locator("#standing-vision")).to_contain_text("borrowed 8 of 40 GPU-h")
    show_day(page, borrowed.start)
    expect(page.locator(".ec-event.borrowed")).to_have_count(2)
    page.locator(".ec-event.borrowed").first.scroll_into_view_if_needed()
    assert widths(page)[0] <= PHONE["width"]
    browsing.screenshot(page, "fair-share-calendar-phone.png")

    fill_form(page, cluster["node1"][2], day_ahead(), slots=2)
    page.get_by_label("Also book this many more GPUs on the same node").fill("1")
    expect(page.locator("#quota-preview")).to_contain_text("Over Vision's quota of 12 GPU-h")
    expect(page.get_by_label("Borrow idle GPUs if over quota")).to_be_visible()
    html, body, window = widths(page)
    assert html <= window and body <= window
    browsing.screenshot(page, "fair-share-preview-phone.png")

    page.goto(browsing.url(f"/bookings/{borrowed.pk}/"))
    expect(page.locator(".borrowed-note")).to_contain_text("Borrowed: may be reclaimed")
    assert widths(page)[0] <= PHONE["width"]
    browsing.screenshot(page, "fair-share-booking-phone.png")


# --- A booking with a training job, and its page ----------------------------------------------------


@pytest.fixture
def training_dirs(tmp_path, settings):
    """A dataset the form may name (TRAINING_DATA_ROOTS) and a runs folder for the job's results."""
    data = tmp_path / "datasets" / "demo" / "data.yaml"
    data.parent.mkdir(parents=True)
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: thing}\n")
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "datasets").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    settings.TRAINING_RUNS_DIR.mkdir()
    return data.resolve(), settings.TRAINING_RUNS_DIR


def record_epochs(job, runs_dir, epochs):
    """The job's progress as the node agent leaves it: results.csv (one row per epoch), a log."""
    train = runs_dir / f"job-{job.pk}" / "train"
    train.mkdir(parents=True)
    header = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/mAP50(B),metrics/mAP50-95(B)\n"
    rows = [
        f"{e},{12.0 * e:.1f},{3.2 - 0.25 * e:.3f},{4.1 - 0.4 * e:.3f},{2.1 - 0.1 * e:.3f},{0.08 * e:.3f},{0.035 * e:.3f}\n"
        for e in range(1, epochs + 1)
    ]
    (train / "results.csv").write_text(header + "".join(rows))
    log = train.parent / "train.log"
    log.write_text("".join(f"Epoch {e}/{job.epochs} done\n" for e in range(1, epochs + 1)))
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING, reason="", epoch=epochs, run_dir=str(train.parent), log_path=str(log),
        metrics={"train/box_loss": 3.2 - 0.25 * epochs, "metrics/mAP50(B)": 0.08 * epochs},
    )


def test_a_booking_with_a_training_job_shows_the_job_and_its_chart_on_the_bookings_page(
    browsing, owner, cluster, training_dirs
):
    data, runs_dir = training_dirs
    start = day_ahead()
    page = open_calendar(browsing, owner)
    fill_form(page, cluster["node1"][2], start, slots=3, title="yolo run")
    expect(page.get_by_label("Epochs")).to_be_hidden()

    page.get_by_label("Train a model in this booking").check()
    expect(page.get_by_label("Model", exact=True)).to_have_value("yolov8n.yaml")
    page.get_by_label("Dataset (data.yaml)").fill(str(data))
    page.get_by_label("Epochs").fill("8")
    page.get_by_label("Image size").fill("64")
    page.get_by_role("button", name="Book", exact=True).click()

    expect(page.locator("#booked")).to_contain_text("Booked #")
    job = TrainingJob.objects.get(reservation__user=owner)
    assert (job.epochs, job.status, job.spec["data"], job.spec["imgsz"]) == (8, "queued", str(data), 64)
    page.get_by_role("link", name=f"Open booking #{job.reservation_id}").click()

    expect(page).to_have_url(browsing.url(f"/bookings/{job.reservation_id}/"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Booking #{job.reservation_id}: yolo run")
    expect(page.get_by_role("heading", name=f"Training job #{job.pk}")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("Queued")
    expect(page.locator("#job-epoch")).to_have_text("epoch 0 of 8")
    expect(page.locator("#chart-summary")).to_have_text("No epoch finished yet.")
    expect(page.locator("#job-chart canvas")).to_have_count(0)

    record_epochs(job, runs_dir, 5)
    page.reload()

    expect(page.locator("#job-status")).to_have_text("Running")
    expect(page.locator("#job-epoch")).to_have_text("epoch 5 of 8")
    expect(page.locator("#job-chart .uplot canvas")).to_be_visible()
    expect(page.locator("#chart-summary")).to_have_text("5 epochs recorded.")
    # The legend names every series the chart draws.
    for series in ("box loss", "class loss", "DFL loss", "mAP50", "mAP50-95"):
        expect(page.locator("#job-chart .u-legend").get_by_text(series, exact=True)).to_be_visible()
    expect(page.locator("#job-log")).to_contain_text("Epoch 5/8 done")
    browsing.screenshot(page, "booking-page.png")


# --- Keyboard only ----------------------------------------------------------------------------------


def test_a_booking_is_cancelled_from_my_bookings_with_the_keyboard_only(browsing, owner, cluster):
    reservation = book(owner, cluster["node1"][:1], start=day_ahead(), title="not needed")
    page = browsing.page(owner)
    page.goto(browsing.url("/bookings/"))

    tab_to(page, page.get_by_text(f"Change booking #{reservation.pk}"))
    page.keyboard.press("Enter")  # opens the booking's actions
    tab_to(page, page.locator(f"#cancel-{reservation.pk}-reason"))
    page.keyboard.type("plans changed")
    cancel = page.get_by_role("button", name=f"Cancel booking #{reservation.pk}", exact=True)
    tab_to(page, cancel)
    expect(cancel).to_be_focused()
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(re.escape(browsing.url("/bookings/")) + r"(\?page=1)?$"))
    expect(page.get_by_role("status")).to_contain_text(f"Booking #{reservation.pk} is cancelled.")
    row = page.locator(f"tr#booking-{reservation.pk}")
    expect(row).to_contain_text("Cancelled")
    expect(page.locator(f"li#booking-{reservation.pk}")).to_have_count(0)
    reservation.refresh_from_db()
    assert reservation.status == "cancelled"
    assert reservation.audit_entries.filter(action="cancel", reason="plans changed").exists()


def test_the_booking_form_is_filled_and_sent_with_the_keyboard_only(browsing, owner, cluster):
    start = day_ahead(hour=14)
    gpu = cluster["node1"][2]
    page = open_calendar(browsing, owner)
    gpus = page.locator("#id_gpus")

    tab_to(page, gpus)
    for _ in range(len(cluster["node1"]) + len(cluster["node2"])):
        if gpus.evaluate("select => Array.from(select.selectedOptions, o => o.value)") == [str(gpu.pk)]:
            break
        page.keyboard.press("ArrowDown")
    expect(gpus).to_have_values([str(gpu.pk)])
    tab_to(page, page.get_by_label("Date"))  # past the "Start now" box
    page.keyboard.type(start.strftime("%m%d%Y"))  # Chromium's date field: month, day, year
    page.keyboard.press("Tab")
    tab_to(page, page.get_by_label("Slot start"))  # Tab may stop on the date's picker first
    page.keyboard.type(start.strftime("%I%M%p"))  # hour, minute, AM/PM
    tab_to(page, page.get_by_label("Slots", exact=True))
    page.keyboard.type("2")  # Tab selected the field's old value: typing replaces it
    tab_to(page, page.get_by_label("Title"))
    page.keyboard.type("typed booking")
    book_button = page.get_by_role("button", name="Book", exact=True)
    tab_to(page, book_button)
    page.keyboard.press("Enter")

    expect(page.locator("#booked")).to_contain_text("Booked #")
    reservation = Reservation.objects.get(user=owner)
    assert (reservation.title, reservation.start, reservation.slots) == ("typed booking", start, 2)
    assert [a.gpu_id for a in reservation.allocations.all()] == [gpu.pk]


def test_a_booking_that_serves_a_registered_model_is_made_from_the_form(browsing, owner, cluster, defects):
    start = day_ahead()
    page = open_calendar(browsing, owner)
    fill_form(page, cluster["node1"][3], start, slots=1, title="serve defects")
    expect(page.get_by_label("Models", exact=True)).to_be_hidden()

    page.get_by_label("Serve registered models in this booking").check()
    page.get_by_label("Models", exact=True).select_option("defects:2")
    page.get_by_label("Preload them and keep them loaded").check()
    page.get_by_role("button", name="Book", exact=True).click()

    expect(page.locator("#booked")).to_contain_text("Booked #")
    serving = Serving.objects.get(reservation__user=owner)
    assert (serving.spec["models"], serving.spec["preload"], serving.status) == (["defects:2"], ["defects:2"], "queued")
    page.get_by_role("link", name=f"Open booking #{serving.reservation_id}").click()
    expect(page.get_by_role("heading", name=f"Serving #{serving.pk}")).to_be_visible()
    expect(page.locator("#serving")).to_contain_text("No replica yet")


# --- A phone and a small laptop ---------------------------------------------------------------------


def widths(page):
    """How wide the page's document and body are, and how wide the window shows them."""
    return page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )


def test_no_page_is_wider_than_a_phone(browsing, owner, staff, high_booker, cluster, training_dirs):
    _data, runs_dir = training_dirs
    reservation = book(owner, cluster["node1"][:2], start=day_ahead(), slots=3, title="a rather long title for a phone")
    # A booking moved by a preemption: its history has long reasons, with times and GPU names.
    moved = book(owner, cluster["node2"][:1], start=day_ahead(), slots=2, priority="low")
    book(high_booker, cluster["node2"][:1], start=day_ahead(), priority="high")
    # Borrowed time over a quota: its page and list say what it means.
    team_quota_set(team=owner.memberships.get().team, actor=None, gpu_hours_per_week=1)
    borrowed = book(owner, cluster["node1"][2:], start=day_ahead(days=3), slots=2, borrow=True, title="borrowed time")
    job = TrainingJob.objects.create(reservation=reservation, spec={"model": "yolov8n.yaml"}, epochs=8)
    record_epochs(job, runs_dir, 3)
    notice_send(
        user=owner, kind=Notice.Kind.PREEMPTION_WARNING, reservation=reservation,
        message=f"Reservation #{reservation.pk} (node1/gpu0, node1/gpu1) is preempted by #99 (high, someone): "
        f"its GPUs are reclaimed at {day_ahead():%Y-%m-%d %H:%M} UTC, when its job is stopped with a checkpoint.",
    )
    signed_in = browsing.page(owner, viewport=PHONE)
    signed_out = browsing.page(viewport=PHONE)
    staff_page = browsing.page(staff, viewport=PHONE)
    pages = [
        (signed_in, "/"), (signed_in, "/bookings/"), (signed_in, f"/bookings/{reservation.pk}/"),
        (signed_in, f"/bookings/{moved.pk}/"), (signed_in, f"/bookings/{borrowed.pk}/"),
        (signed_in, "/notices/"), (signed_in, "/profile/"), (signed_out, "/login/"), (staff_page, "/reports/usage/"),
    ]

    for page, path in pages:
        page.goto(browsing.url(path))
        expect(page.locator("main h1")).to_be_visible()
        if path == "/":
            expect(page.locator(".ec-timeline .ec-body")).to_be_visible()
        html, body, window = widths(page)
        assert window == PHONE["width"] and html <= window and body <= window, (path, html, body)


def test_on_a_phone_the_calendar_shows_a_day_and_the_booking_form_comes_below_it(browsing, owner, cluster):
    page = open_calendar(browsing, owner, viewport=PHONE)

    assert page.evaluate("window.gpuCalendar.getView().type") == "resourceTimelineDay"
    calendar = page.locator("#calendar").bounding_box()
    form = page.locator(".booking-panel").bounding_box()
    assert form["y"] >= calendar["y"] + calendar["height"]
    # The day's timeline scrolls inside its own box, the page does not.
    assert page.evaluate("(() => { const m = document.querySelector('.ec-main'); return m.scrollWidth > m.clientWidth; })()")
    assert widths(page)[0] <= PHONE["width"]


def test_the_view_follows_the_window_across_the_phone_breakpoint(browsing, owner, cluster):
    page = open_calendar(browsing, owner, viewport=LAPTOP)
    view = "window.gpuCalendar.getView().type"
    assert page.evaluate(view) == "resourceTimelineWeek"

    page.set_viewport_size(PHONE)
    expect(page.get_by_role("button", name="Day", exact=True)).to_have_class(re.compile(r"\bec-active\b"))
    assert page.evaluate(view) == "resourceTimelineDay"
    page.get_by_role("button", name="Week", exact=True).click()  # a choice the person makes stays
    page.set_viewport_size({"width": 600, "height": 844})
    assert page.evaluate(view) == "resourceTimelineWeek"
    page.set_viewport_size(LAPTOP)

    expect(page.get_by_role("button", name="Week", exact=True)).to_have_class(re.compile(r"\bec-active\b"))
    assert page.evaluate(view) == "resourceTimelineWeek"


def test_on_a_small_laptop_the_week_shows_all_seven_days_and_no_title_cut_short(browsing, owner, cluster):
    start = day_ahead(days=1, hour=2)
    long_run = book(owner, cluster["node1"][:1], start=start, slots=12, title="overnight training run")
    short = book(owner, cluster["node1"][1:2], start=start, slots=1, title="distillation")
    page = open_calendar(browsing, owner, viewport=LAPTOP)
    expect(page.locator(".ec-event", has_text="overnight training run")).to_be_visible()

    box = page.locator(".ec-main").bounding_box()
    days = page.locator(".ec-header .ec-col-head:not(.ec-slots)")
    expect(days).to_have_count(7)
    for day in days.all():
        head = day.bounding_box()
        assert box["x"] <= head["x"] and head["x"] + head["width"] <= box["x"] + box["width"] + 1
    assert page.evaluate("(() => { const m = document.querySelector('.ec-main'); return m.scrollWidth <= m.clientWidth; })()")
    # A title is shown whole (wrapped where it must) or, in a box too narrow for a word, not at all.
    shown = page.locator(f".ec-event[aria-label^='overnight training run (#{long_run.pk})']")
    expect(shown).not_to_have_attribute("data-untitled", "")
    expect(shown.locator(".ec-event-body")).to_have_text("overnight training run · owner")
    expect(page.locator(f".ec-event[aria-label^='distillation (#{short.pk})']")).to_have_attribute("data-untitled", "")
    cut = page.evaluate(
        "() => Array.from(document.querySelectorAll('.ec-event:not([data-untitled]):not(.ec-bg-event) .ec-event-body'))"
        ".filter(body => body.scrollWidth > body.clientWidth + 1).map(body => body.textContent)"
    )
    assert cut == []


def test_the_six_hour_axis_labels_start_on_their_gridlines(browsing, owner, cluster):
    page = open_calendar(browsing, owner, viewport=LAPTOP)

    labels = page.evaluate("""() => {
      const width = window.gpuCalendar.getOption('slotWidth');
      const head = document.querySelector('.ec-header .ec-slots');
      return Array.from(head.querySelectorAll('.ec-slot')).map((slot, i) => ({
        gridline: head.getBoundingClientRect().left + i * 3 * width,
        slot: slot.getBoundingClientRect().left,
        label: slot.querySelector('time').getBoundingClientRect().left,
      }));
    }""")

    assert len(labels) == 4  # 00, 06, 12 and 18 in UTC
    for label in labels:
        assert abs(label["slot"] - label["gridline"]) <= 1 and 0 <= label["label"] - label["gridline"] <= 4, labels


def test_a_cpu_device_suggests_a_small_image_size_and_batch_unless_the_person_typed_theirs(browsing, owner, cluster):
    cpu = node_register(hostname="node3", devices=[Device(index=0, model=GPU.CPU_MODEL, memory_mb=4096, uuid="cpu-0")])
    page = open_calendar(browsing, owner)
    page.get_by_label("Train a model in this booking").check()
    size, batch = page.get_by_label("Image size"), page.get_by_label("Batch", exact=True)
    expect(page.locator("#id_gpus optgroup").first).to_have_attribute("label", "node1 (online · can train now)")

    page.locator("#id_gpus").select_option(str(cpu.gpus.get().pk))
    expect(size).to_have_value("64")
    expect(batch).to_have_value("4")
    page.locator("#id_gpus").select_option(str(cluster["node1"][0].pk))
    expect(size).to_have_value("640")
    expect(batch).to_have_value("16")
    size.fill("320")
    page.locator("#id_gpus").select_option(str(cpu.gpus.get().pk))

    expect(size).to_have_value("320")
    expect(batch).to_have_value("4")


# --- Recurring bookings -------------------------------------------------------------------------------


def test_a_weekly_series_is_booked_from_the_form_marked_on_the_calendar_and_an_occurrence_cancelled(
    browsing, owner, teammate, outsider, cluster
):
    berlin = ZoneInfo("Europe/Berlin")
    start = day_ahead()
    local = start.astimezone(berlin)
    gpu = cluster["node1"][1]
    days = [WEEKDAY_CODES[local.weekday()], WEEKDAY_CODES[(local.weekday() + 1) % 7]]
    rule = f"FREQ=WEEKLY;BYDAY={','.join(sorted(days, key=WEEKDAY_CODES.index))};COUNT=10"
    starts = recurrence.expand(recurrence.parse_rule(rule), start, berlin)
    colour_teams()
    # Another team's booking on the third occurrence: the preview says so, and "skip" books the rest.
    taken = book(outsider, [gpu], start=starts[2], title="nlp sweep")
    book(teammate, cluster["node1"][2:3], start=start, slots=3, title="detector")
    page = open_calendar(browsing, owner, zone="Europe/Berlin", viewport=LAPTOP)

    fill_form(page, gpu, local, slots=2, title="weekly eval")
    page.get_by_label("Repeat").select_option("weekly")
    for code in days:
        page.locator(f"input[name=days][value={code}]").check()
    page.get_by_label("Times").fill("10")
    page.get_by_label("If an occurrence is taken").select_option("skip")
    preview = page.locator("#series-preview")
    expect(preview).to_contain_text("Repeats every week on")
    expect(preview).to_contain_text("Europe/Berlin time, 10 times: 10 occurrences.")
    expect(preview).to_contain_text("7 free · 1 taken · 2 later")
    expect(preview.locator("li.occ-taken")).to_contain_text(f"taken by #{taken.pk}")
    expect(preview).to_contain_text("The 1 that cannot be booked is skipped")
    # A series has its own preview and choice: the first's quota preview and "wait if taken" step aside.
    expect(page.locator("#quota-preview")).to_be_hidden()
    expect(page.get_by_label("If taken, wait for the window to free")).to_be_hidden()
    browsing.screenshot(page, "series-form.png")
    page.get_by_role("button", name="Book", exact=True).click()

    series = wait_for(lambda: Series.objects.filter(user=owner).first(), 10, "the series")
    expect(page).to_have_url(browsing.url(f"/series/{series.pk}/"))
    # The message says what became of each; the banner, that one was skipped (a notice).
    expect(page.locator(".messages")).to_contain_text(f"Series #{series.pk} booked, every week on")
    expect(page.locator(".messages")).to_contain_text("7 booked, 1 skipped; 2 later occurrences will be booked")
    assert (series.rule, series.time_zone, series.on_conflict) == (rule, "Europe/Berlin", "skip")
    booked = list(Reservation.objects.filter(series=series).order_by("start"))
    assert [r.start for r in booked] == [s for s in starts[:8] if s != starts[2]]
    expect(page.locator("#series-rule")).to_contain_text("Europe/Berlin time, 10 times")

    # The calendar marks them: ↻ on each, the rule in its details.
    page.goto(browsing.url("/"))
    show_day(page, local)
    marked = page.locator(".ec-event.series", has_text="weekly eval · owner")
    expect(marked).to_have_count(1)
    expect(marked.locator(".series-mark")).to_have_text("↻")
    expect(page.locator(".ec-event:not(.series)", has_text="detector · teammate")).to_have_count(1)
    marked.focus()
    expect(page.locator("#event-tip")).to_contain_text(f"↻ Repeats every week on")
    expect(page.locator("#event-tip")).to_contain_text(f"(series #{series.pk})")

    # Its page from the booking's; the second occurrence cancelled with the keyboard.
    marked.press("Enter")
    expect(page).to_have_url(browsing.url(f"/bookings/{booked[0].pk}/"))
    page.get_by_role("link", name=f"Series #{series.pk}").click()
    expect(page).to_have_url(browsing.url(f"/series/{series.pk}/"))
    second = booked[1]
    row = page.locator(f"#occ-{second.occurrence.astimezone(dt_timezone.utc):%Y%m%dT%H%M}")
    expect(row).to_contain_text("booked")
    browsing.screenshot(page, "series-page.png")
    summary = row.locator("summary")
    tab_to(page, summary)
    page.keyboard.press("Enter")
    cancel = row.get_by_role("button", name="Cancel this occurrence")
    tab_to(page, cancel)
    page.keyboard.press("Enter")

    expect(page.locator(".messages")).to_contain_text("is cancelled.")
    expect(page.locator(f"#occ-{second.occurrence.astimezone(dt_timezone.utc):%Y%m%dT%H%M}")).to_contain_text("cancelled")
    second.refresh_from_db()
    assert second.status == "cancelled"
    assert Reservation.objects.filter(series=series, status="confirmed").count() == 6

    # On a phone: the page and the form with its preview no wider than the screen.
    phone = browsing.page(owner, zone="Europe/Berlin", viewport=PHONE)
    phone.goto(browsing.url(f"/series/{series.pk}/"))
    expect(phone.locator("main h1")).to_contain_text(f"Series #{series.pk}")
    html, body, window = widths(phone)
    assert html <= window and body <= window, (html, body, window)
    browsing.screenshot(phone, "series-page-phone.png")
    phone.goto(browsing.url("/"))
    fill_form(phone, cluster["node2"][0], local, title="phone series")
    phone.get_by_label("Repeat").select_option("weekdays")
    expect(phone.locator("#series-preview")).to_contain_text("Repeats every weekday at")
    expect(phone.locator("input[name=days]").first).to_be_hidden()  # only for "weekly"
    html, body, window = widths(phone)
    assert html <= window and body <= window, (html, body, window)
