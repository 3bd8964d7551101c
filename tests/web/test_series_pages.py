"""Recurring bookings in the pages: the booking form's "Repeat" (its preview of each occurrence, the
series it books, its refusals), a series' page (what became of each occurrence, its actions and who
may take them) and the calendar's mark on occurrences.

Pages are driven with Django's test client (the browser test is in test_browser.py). Time is frozen
at FROZEN_NOW (Monday 7 January 2030, 09:17 UTC): the next slot starts at 10:00 UTC.
"""

import json
import re
from datetime import timedelta

import pytest

from reservations.models import AuditEntry, Membership, Reservation, Series, TeamQuota
from reservations.services.series import series_cancel, series_create
from trainer.models import TrainingJob

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, make_user, page_client, text_of
from .test_calendar import form_data, hidden_forms, post_form

pytestmark = pytest.mark.usefixtures("frozen")
DAY = timedelta(days=1)
Status = Reservation.Status


def repeat(gpus, *, start=NEXT_SLOT, slots=1, how="daily", count=3, **extra):
    """The booking form with its repeat filled in (ending after `count` times unless said)."""
    data = form_data(gpus, start=start, slots=slots, repeat=how, ends="count", count=count, on_conflict="fail")
    data.update(extra)
    return data


def preview(client, gpus, *, start=NEXT_SLOT, slots=1, **extra):
    params = {
        "gpus": [g.pk for g in gpus], "date": start.strftime("%Y-%m-%d"), "slot": start.strftime("%H:%M"),
        "slots": slots, "repeat": "daily", "ends": "count", "count": 3, "on_conflict": "fail", "priority": "normal",
    }
    params.update(extra)
    return client.get("/book/series-preview/", params)


def nightly(owner, gpus, *, count=3, **kwargs):
    """A series made through the service: 18:00 UTC each night from tonight, two slots."""
    return series_create(
        user=owner, start=NEXT_SLOT + 4 * SLOT, slots=kwargs.pop("slots", 2), rule=f"FREQ=DAILY;COUNT={count}",
        gpu_ids=[g.pk for g in gpus], title=kwargs.pop("title", "nightly fine-tune"), now=FROZEN_NOW, **kwargs,
    ).series


def occurrences(series):
    return list(Reservation.objects.filter(series=series, rebook_of=None).order_by("start"))


def cancel_forms(html):
    """The page's per-occurrence cancel forms, by the occurrence (ISO) each names."""
    return re.findall(r'<input type="hidden" name="occurrence" value="([^"]+)"', html)


# --- The form books a series ---------------------------------------------------------------------


def test_a_weekly_repeat_books_a_series_of_ordinary_bookings_and_opens_its_page(owner, cluster):
    gpu = cluster["node1"][0]
    client = page_client(owner)

    response = post_form(client, repeat([gpu], how="weekly", days=["MO", "TH"], count=4, title="weekly eval"))

    series = Series.objects.get()
    assert response.status_code == 201 and response["HX-Redirect"] == f"/series/{series.pk}/"
    assert (series.rule, series.time_zone, series.on_conflict) == ("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=4", "UTC", "fail")
    booked = occurrences(series)
    assert [r.start for r in booked] == [NEXT_SLOT, NEXT_SLOT + 3 * DAY, NEXT_SLOT + 7 * DAY, NEXT_SLOT + 10 * DAY]
    assert all(r.title == "weekly eval" and [a.gpu_id for a in r.allocations.all()] == [gpu.pk] for r in booked)
    page = text_of(client.get(response["HX-Redirect"]))
    assert f"Series #{series.pk} booked, every week on Monday and Thursday at 10:00 UTC, 4 times: 4 booked." in page


def test_without_javascript_the_booked_series_is_a_redirect_to_its_page(owner, cluster):
    response = post_form(page_client(owner), repeat(cluster["node1"][:1]), htmx=False)

    assert response.status_code == 302 and response.url == f"/series/{Series.objects.get().pk}/"


def test_the_series_keeps_the_wall_clock_of_the_viewers_zone(owner, cluster):
    berlin = NEXT_SLOT + timedelta(hours=1)  # 11:00 in Berlin is the 10:00 UTC slot

    post_form(page_client(owner, "Europe/Berlin"), repeat(cluster["node1"][:1], start=berlin, how="weekdays", count=5))

    series = Series.objects.get()
    assert (series.time_zone, series.first_start, series.rule) == ("Europe/Berlin", NEXT_SLOT, "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT=5")
    assert [r.start for r in occurrences(series)] == [NEXT_SLOT + n * DAY for n in range(5)]


def test_a_repeat_until_a_day_books_each_day_up_to_it(owner, cluster):
    data = repeat(cluster["node1"][:1], ends="until", until=(NEXT_SLOT + 2 * DAY).strftime("%Y-%m-%d"))

    assert post_form(page_client(owner), data).status_code == 201

    series = Series.objects.get()
    assert series.rule == "FREQ=DAILY;UNTIL=20300109"
    assert len(occurrences(series)) == 3


def test_weekly_with_no_day_ticked_repeats_on_the_first_days_weekday(owner, cluster):
    post_form(page_client(owner), repeat(cluster["node1"][:1], how="weekly", count=2))

    assert Series.objects.get().rule == "FREQ=WEEKLY;BYDAY=MO;COUNT=2"


def test_skip_books_the_free_occurrences_and_the_message_names_the_skipped_one(owner, outsider, cluster):
    gpu = cluster["node1"][0]
    in_the_way = book(outsider, [gpu], start=NEXT_SLOT + DAY)
    client = page_client(owner)

    response = post_form(client, repeat([gpu], on_conflict="skip"))

    assert response.status_code == 201
    series = Series.objects.get()
    assert [r.start for r in occurrences(series)] == [NEXT_SLOT, NEXT_SLOT + 2 * DAY]
    page = text_of(client.get(response["HX-Redirect"]))
    assert "2 booked, 1 skipped. Skipped: Tue 8 Jan 10:00 (" in page
    assert Reservation.objects.get(pk=in_the_way.pk).status == Status.CONFIRMED


def test_waitlist_puts_the_taken_occurrence_on_the_waitlist(owner, outsider, cluster):
    gpu = cluster["node1"][0]
    book(outsider, [gpu], start=NEXT_SLOT + DAY)
    client = page_client(owner)

    response = post_form(client, repeat([gpu], on_conflict="waitlist"))

    assert [r.status for r in occurrences(Series.objects.get())] == [Status.CONFIRMED, Status.WAITLISTED, Status.CONFIRMED]
    assert "2 booked, 1 on the waitlist." in text_of(client.get(response["HX-Redirect"]))


def test_fail_books_nothing_shows_each_blocked_occurrence_and_skipping_them_books_the_rest(owner, outsider, cluster):
    gpu = cluster["node1"][0]
    in_the_way = book(outsider, [gpu], start=NEXT_SLOT + DAY)
    client = page_client(owner)

    response = post_form(client, repeat([gpu], title="daily eval"))

    assert response.status_code == 409
    assert not Series.objects.exists() and not Reservation.objects.filter(user=owner).exists()
    html = response.content.decode()
    conflict = text_of(response)
    assert 'id="series-conflict"' in html
    assert f"Tue 8 Jan 10:00–12:00 : taken (taken by #{in_the_way.pk})" in conflict
    assert "Free then instead:" in conflict
    # "Skip it, book the rest" posts the same series again with on_conflict skip.
    skip = next(fields for fields in hidden_forms(html) if ("on_conflict", "skip") in fields)
    assert ("title", "daily eval") in skip and ("gpus", str(gpu.pk)) in skip and ("repeat", "daily") in skip
    again = {}
    for name, value in skip:
        again.setdefault(name, []).append(value)

    booked = post_form(client, again)

    assert booked.status_code == 201
    assert [r.start for r in occurrences(Series.objects.get())] == [NEXT_SLOT, NEXT_SLOT + 2 * DAY]


def test_a_series_that_would_preempt_says_whose_bookings_first_and_books_when_confirmed(high_booker, outsider, cluster):
    gpu = cluster["node1"][0]
    # Far enough ahead that preempting needs no more notice than it gets.
    start = NEXT_SLOT + 2 * DAY
    victim = book(outsider, [gpu], start=start + DAY, priority="low", title="overnight sweep")
    client = page_client(high_booker)

    response = post_form(client, repeat([gpu], start=start, priority="high"))

    assert response.status_code == 200 and not Series.objects.exists()
    shown = text_of(response)
    assert "1 occurrence of this series would preempt bookings:" in shown
    assert f"Thu 10 Jan 10:00–12:00: #{victim.pk} overnight sweep of outsider on node1/gpu0" in shown
    confirm = next(fields for fields in hidden_forms(response.content.decode()) if ("confirm_preempt", "on") in fields)
    assert ("victims", str(victim.pk)) in confirm
    again = {}
    for name, value in confirm:
        again.setdefault(name, []).append(value)

    assert post_form(client, again).status_code == 201

    assert len(occurrences(Series.objects.get())) == 3
    victim.refresh_from_db()
    assert not victim.allocations.filter(gpu=gpu, live=True, start__lt=start + DAY + SLOT, end__gt=start + DAY).exists()


@pytest.mark.parametrize("extra, words", [
    ({"more": 1}, "Also book this many more GPUs on the same node: A repeating booking books the GPUs picked"),
    ({"start_now": "on"}, "Start now: the rest of the current slot counts as the first slot: A repeating booking starts on a slot"),
    ({"count": ""}, "Times: Say how many times."),
    ({"count": 400}, "Times: At most 366 times."),
    ({"ends": "until", "until": ""}, "Last day: Give the last day."),
    ({"ends": "until", "until": "2030-01-06"}, "Last day: The last day is before the first."),
    ({"ends": "until", "until": "2031-06-01"}, "Last day: That makes more than 366 occurrences: end it sooner."),
    ({"how": "weekly", "days": ["XX"]}, "On: Select a valid choice. XX is not one of the available choices."),
    ({"on_conflict": "retry"}, "If an occurrence is taken: Select a valid choice."),
    ({"slots": 13}, "Slots: Occurrences 2030-01-07 10:00 UTC and 2030-01-08 10:00 UTC would overlap"),
])
def test_a_repeat_the_rules_refuse_names_the_field_and_books_nothing(owner, cluster, extra, words):
    extra = dict(extra)
    data = repeat(cluster["node1"][:1], how=extra.pop("how", "daily"), **extra)

    response = post_form(page_client(owner), data)

    assert response.status_code == 400
    assert words in text_of(response)
    assert not Series.objects.exists() and not Reservation.objects.exists()


def test_a_start_off_the_grid_names_the_slot(owner, cluster):
    response = post_form(page_client(owner), repeat(cluster["node1"][:1], start=NEXT_SLOT + timedelta(hours=1)))

    assert response.status_code == 400 and "Slot start:" in text_of(response) and "slot boundary" in text_of(response)


# --- The form's preview of each occurrence --------------------------------------------------------------


def test_the_preview_says_how_each_occurrence_stands(owner, outsider, cluster, settings):
    settings.BOOKING_HORIZON_DAYS = 3
    gpu = cluster["node1"][0]
    taken = book(outsider, [gpu], start=NEXT_SLOT + DAY)

    response = preview(page_client(owner), [gpu], count=6)

    assert response.status_code == 200
    shown = text_of(response)
    assert "Repeats every day at 10:00 UTC, 6 times: 6 occurrences." in shown
    assert "2 free · 1 taken · 3 later" in shown
    rows = re.findall(r'<li class="occ occ-(\w+)">', response.content.decode())
    assert rows == ["free", "taken", "free", "later", "later", "later"]
    assert f"Tue 8 Jan, 10:00–12:00 taken taken by #{taken.pk}" in shown
    assert "As it is, nothing would be booked: 1 occurrence cannot be." in shown
    # With "skip", it says what becomes of the one in the way instead.
    assert "The 1 that cannot be booked is skipped" in text_of(preview(page_client(owner), [gpu], count=6, on_conflict="skip"))


def test_the_preview_counts_the_quota_week_by_week_and_says_which_preempt(high_booker, outsider, team, cluster):
    # 2 GPU-hours a day, 5 a week allowed: the third occurrence passes the limit.
    TeamQuota.objects.create(team=team, gpu_hours_per_week=5)
    gpu = cluster["node1"][0]
    start = NEXT_SLOT + 2 * DAY
    victim = book(outsider, [gpu], start=start, priority="low")

    response = preview(page_client(high_booker), [gpu], start=start, priority="high")

    rows = re.findall(r'<li class="occ occ-(\w+)">', response.content.decode())
    assert rows == ["preempts", "free", "over_quota"]
    shown = text_of(response)
    assert f"would preempt #{victim.pk}" in shown and "over its quota of 5 GPU-hours" in shown
    # Borrowing: the occurrence over the quota would be borrowed time.
    borrowed = preview(page_client(high_booker), [gpu], start=start, priority="normal", borrow="on")
    assert re.findall(r'<li class="occ occ-(\w+)">', borrowed.content.decode())[2] == "borrowed"


def test_the_preview_lists_a_few_later_occurrences_and_counts_the_rest(owner, cluster, settings):
    settings.BOOKING_HORIZON_DAYS = 2

    shown = text_of(preview(page_client(owner), cluster["node1"][:1], count=30))

    assert "2 free · 28 later" in shown and "… and 20 more later on." in shown


def test_the_preview_has_nothing_to_say_without_a_repeat_or_before_the_form_is_filled(owner, cluster):
    client = page_client(owner)

    assert client.get("/book/series-preview/", {"repeat": "none"}).content.strip() == b""
    assert "Pick GPUs, the first day and a slot" in text_of(client.get("/book/series-preview/", {"repeat": "daily", "slots": 1}))


def test_the_preview_refuses_occurrences_that_would_overlap_as_the_booking_does(owner, cluster):
    response = preview(page_client(owner), cluster["node1"][:1], slots=13)

    assert response.status_code == 400
    assert "Slots: Occurrences 2030-01-07 10:00 UTC and 2030-01-08 10:00 UTC would overlap" in text_of(response)


def test_the_preview_asks_which_team_to_charge_and_tells_someone_without_one(owner, other_team, cluster):
    loner = make_user("loner")
    assert "belong to no team" in text_of(preview(page_client(loner), cluster["node1"][:1]))
    Membership.objects.create(team=other_team, user=owner)
    assert "You belong to several teams: name one." in text_of(preview(page_client(owner), cluster["node1"][:1]))
    assert "Repeats every day" in text_of(preview(page_client(owner), cluster["node1"][:1], team=other_team.pk))


@pytest.mark.parametrize("extra, words", [
    ({"count": 0}, "Times: Ensure this value is greater than or equal to 1."),
    ({"ends": "until", "until": "2030-01-01"}, "Last day: The last day is before the first."),
    ({"date": "2030-01-06"}, "Slot start: The start is in the past."),
    ({"date": "2030-03-01"}, "Date: Pick a day from today"),
    ({"slot": "11:00"}, "Slot start:"),
])
def test_a_bad_value_in_the_preview_is_a_400_naming_the_field(owner, cluster, extra, words):
    response = preview(page_client(owner), cluster["node1"][:1], **extra)

    assert response.status_code == 400 and words in text_of(response)


def test_the_booking_form_offers_repeat_with_its_preview(owner, cluster):
    html = page_client(owner).get("/").content.decode()

    assert re.search(r'<select name="repeat" id="id_repeat">\s*<option value="none" selected>Does not repeat</option>', html)
    assert 'hx-get="/book/series-preview/"' in html
    assert 'name="on_conflict"' in html and 'name="days" value="MO"' in html


# --- A series' page ---------------------------------------------------------------------------------


def test_the_series_page_shows_the_rule_and_what_became_of_each_occurrence(owner, outsider, cluster, settings):
    settings.BOOKING_HORIZON_DAYS = 3
    gpu = cluster["node1"][0]
    book(outsider, [gpu], start=NEXT_SLOT + 4 * SLOT + DAY, slots=1)
    series = nightly(owner, [gpu], count=6, on_conflict="skip")
    first, third = occurrences(series)
    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=NEXT_SLOT + 4 * SLOT + 4 * DAY)

    response = page_client(outsider).get(f"/series/{series.pk}/")

    assert response.status_code == 200
    shown = text_of(response)
    assert f"Series #{series.pk}: nightly fine-tune Going" in shown
    assert "Repeats Every day at 18:00 UTC, 6 times" in shown
    assert "GPUs node1/gpu0" in shown and "Owner owner" in shown and "Team Vision" in shown
    assert "2 booked · 1 skipped · 1 cancelled · 2 later" in shown
    statuses = re.findall(r'<span class="status status-(\w+)">', section(response, "coming-heading", "past-heading"))
    assert statuses == ["confirmed", "skipped", "confirmed", "later", "cancelled", "later"]
    assert "already booked" in shown  # the skipped one says why
    assert f'href="/bookings/{first.pk}/"' in response.content.decode() and f'href="/bookings/{third.pk}/"' in response.content.decode()
    # Not theirs to change: no actions.
    assert "Cancel this occurrence" not in shown and "Change the series" not in shown
    assert "Only its owner, an admin of its team or staff may change this series." in shown


def section(response, start_id, end_id):
    html = response.content.decode()
    return html[html.index(f'id="{start_id}"'):html.index(f'id="{end_id}"')]


def test_past_occurrences_are_listed_apart_with_their_jobs_for_the_team_only(owner, outsider, cluster, frozen):
    series = nightly(owner, cluster["node1"][:1])
    first = occurrences(series)[0]
    TrainingJob.objects.create(reservation=first, spec={"model": "yolov8n.yaml"}, epochs=5, epoch=5, status="completed")
    Series.objects.filter(pk=series.pk).update(work={"job": {"model": "yolov8n.yaml", "data": "/data/parts.yaml", "epochs": 5}})
    frozen.move_to(first.end + timedelta(minutes=1))

    mine, theirs = page_client(owner).get(f"/series/{series.pk}/"), page_client(outsider).get(f"/series/{series.pk}/")

    past = section(mine, "past-heading", "history-heading")
    assert f"/bookings/{first.pk}/" in past and "completed, epoch 5 of 5" in past
    assert f"/bookings/{first.pk}/" not in section(mine, "coming-heading", "past-heading")
    assert "Trains yolov8n.yaml on /data/parts.yaml, 5 epochs" in text_of(mine)
    # Another team sees the bookings, not the jobs (policy.JobViewer).
    assert f"/bookings/{first.pk}/" in section(theirs, "past-heading", "history-heading")
    assert "epoch 5 of 5" not in text_of(theirs) and "parts.yaml" not in text_of(theirs)


def test_each_occurrences_booking_page_links_to_its_series(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])
    first = occurrences(series)[0]

    response = page_client(owner).get(f"/bookings/{first.pk}/")

    assert f'<a href="/series/{series.pk}/" id="series-link">' in response.content.decode()
    assert re.search(rf"Repeats ↻ Series #{series.pk} : every day at 18:00 UTC, 3 times", text_of(response))
    assert f"series #{series.pk}" in text_of(page_client(owner).get("/bookings/"))


def test_the_series_page_shows_times_in_the_viewers_zone(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])

    shown = text_of(page_client(owner, "Asia/Tokyo").get(f"/series/{series.pk}/"))

    assert "When (Asia/Tokyo)" in shown and "Tue 8 Jan 2030, 03:00–07:00" in shown


def test_an_unknown_series_is_a_404_and_a_signed_out_visitor_signs_in_first(owner, client):
    assert page_client(owner).get("/series/999999/").status_code == 404
    response = client.get("/series/1/")
    assert response.status_code == 302 and response.url.startswith("/login/")


# --- The page's actions -------------------------------------------------------------------------------


def test_the_owner_cancels_one_occurrence_from_the_page(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])
    second = occurrences(series)[1]
    client = page_client(owner)
    offered = cancel_forms(client.get(f"/series/{series.pk}/").content.decode())
    assert offered == [o.occurrence.isoformat() for o in occurrences(series)]

    response = client.post(f"/series/{series.pk}/cancel/", {"scope": "one", "occurrence": offered[1]}, follow=True)

    assert response.redirect_chain == [(f"/series/{series.pk}/", 302)]
    assert "The occurrence of Tue 8 Jan 18:00 is cancelled." in text_of(response)
    assert [r.status for r in occurrences(series)] == [Status.CONFIRMED, Status.CANCELLED, Status.CONFIRMED]
    assert second.pk in [r.pk for r in occurrences(series) if r.status == Status.CANCELLED]
    assert AuditEntry.objects.filter(action="series_cancel", target=f"series:{series.pk}", actor=owner).exists()
    # The cancelled one is no longer offered.
    assert cancel_forms(response.content.decode()) == [offered[0], offered[2]]


def test_the_owner_cancels_this_and_the_following(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])
    second = occurrences(series)[1]

    response = page_client(owner).post(
        f"/series/{series.pk}/cancel/", {"scope": "following", "occurrence": second.occurrence.isoformat()}, follow=True
    )

    assert "The occurrences from Tue 8 Jan 18:00 on are cancelled." in text_of(response)
    assert [r.status for r in occurrences(series)] == [Status.CONFIRMED, Status.CANCELLED, Status.CANCELLED]


def test_the_owner_cancels_the_whole_series(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])

    response = page_client(owner).post(f"/series/{series.pk}/cancel/", {"scope": "all"}, follow=True)

    assert f"Series #{series.pk} is cancelled, with its occurrences to come." in text_of(response)
    assert "Cancelled" in text_of(response) and "Change the series" not in text_of(response)
    assert all(r.status == Status.CANCELLED for r in occurrences(series))
    series.refresh_from_db()
    assert series.cancelled_at == FROZEN_NOW


def test_a_team_admin_must_say_why_and_the_error_is_shown_at_the_occurrence(owner, team_admin, cluster):
    series = nightly(owner, cluster["node1"][:1])
    first = occurrences(series)[0]
    client = page_client(team_admin)
    key = first.occurrence.isoformat()
    assert "Cancel this occurrence" in text_of(client.get(f"/series/{series.pk}/"))

    refused = client.post(f"/series/{series.pk}/cancel/", {"scope": "one", "occurrence": key, "reason": ""})

    assert refused.status_code == 400
    html = refused.content.decode()
    assert re.search(r'<details class="occurrence-actions" open>', html)
    assert "Reason: Say why when you change someone else's series." in text_of(refused)
    assert 'id="cancel-20300107T1800-reason"' in html
    assert Reservation.objects.get(pk=first.pk).status == Status.CONFIRMED

    done = client.post(f"/series/{series.pk}/cancel/", {"scope": "one", "occurrence": key, "reason": "the node is needed"})

    assert done.status_code == 302
    assert Reservation.objects.get(pk=first.pk).status == Status.CANCELLED
    assert AuditEntry.objects.filter(action="series_cancel", actor=team_admin, reason__contains="the node is needed").exists()


def test_a_teammate_sees_the_series_read_only_and_may_not_change_it(owner, teammate, cluster):
    series = nightly(owner, cluster["node1"][:1])
    client = page_client(teammate)
    page = client.get(f"/series/{series.pk}/")
    assert page.status_code == 200 and cancel_forms(page.content.decode()) == []

    response = client.post(f"/series/{series.pk}/cancel/", {"scope": "all", "reason": "mine now"})

    assert response.status_code == 403
    assert "Only the owner, a team admin or staff may change this series." in text_of(response)
    assert all(r.status == Status.CONFIRMED for r in occurrences(series))


def test_staff_may_cancel_someone_elses_series_with_a_reason(owner, staff, cluster):
    series = nightly(owner, cluster["node1"][:1])

    response = page_client(staff).post(f"/series/{series.pk}/cancel/", {"scope": "all", "reason": "maintenance"})

    assert response.status_code == 302
    assert all(r.status == Status.CANCELLED for r in occurrences(series))


@pytest.mark.parametrize("data, words", [
    ({"scope": "one"}, "Occurrence: Name the occurrence to cancel."),
    ({"scope": "one", "occurrence": "tomorrow"}, "Occurrence: Not an occurrence's start"),
    ({"scope": "one", "occurrence": "2030-01-07T19:00:00+00:00"}, "The series has no occurrence starting at 2030-01-07 19:00 UTC."),
    ({"scope": "sometimes"}, "Scope: Select a valid choice."),
    # Beyond what a datetime holds once in UTC: refused, never a 500.
    ({"scope": "one", "occurrence": "0001-01-01T00:00:00+01:00"}, "Occurrence: Not an occurrence's start"),
    ({"scope": "one", "occurrence": "9999-12-31T23:00:00-05:00"}, "Occurrence: Not an occurrence's start"),
])
def test_a_cancel_that_names_no_occurrence_of_the_series_is_a_400_not_a_500(owner, cluster, data, words):
    series = nightly(owner, cluster["node1"][:1])

    response = page_client(owner).post(f"/series/{series.pk}/cancel/", data)

    assert response.status_code == 400 and words in text_of(response)
    assert all(r.status == Status.CONFIRMED for r in occurrences(series))


def test_a_team_admin_renaming_a_high_series_keeps_it_high(high_booker, team_admin, cluster):
    series = nightly(high_booker, cluster["node1"][:1], priority="high")
    client = page_client(team_admin)  # may not book high themselves
    assert 'value="high" selected' in client.get(f"/series/{series.pk}/").content.decode()

    response = client.post(f"/series/{series.pk}/change/", {"title": "renamed", "priority": "high", "reason": "clearer"})

    assert response.status_code == 302
    assert {(r.title, r.priority) for r in occurrences(series)} == {("renamed", "high")}


def test_the_owner_changes_the_title_and_priority_of_the_occurrences_to_come(owner, cluster, frozen):
    series = nightly(owner, cluster["node1"][:1])
    first = occurrences(series)[0]
    frozen.move_to(first.start + timedelta(minutes=5))  # the first has begun
    client = page_client(owner)

    response = client.post(f"/series/{series.pk}/change/", {"title": "nightly v2", "priority": "low"}, follow=True)

    assert f"Series #{series.pk} is changed, with its occurrences to come." in text_of(response)
    assert [(r.title, r.priority) for r in occurrences(series)] == [
        ("nightly fine-tune", "normal"), ("nightly v2", "low"), ("nightly v2", "low")
    ]
    nothing = client.post(f"/series/{series.pk}/change/", {"title": "nightly v2", "priority": "low"})
    assert nothing.status_code == 400 and "Nothing to change" in text_of(nothing)


def test_the_owner_transfers_the_series_within_the_team_only(owner, teammate, outsider, cluster):
    series = nightly(owner, cluster["node1"][:1])
    client = page_client(owner)
    assert '<datalist id="team-members"><option value="teammate"></option></datalist>' in client.get(f"/series/{series.pk}/").content.decode()

    refused = client.post(f"/series/{series.pk}/transfer/", {"to": outsider.username})
    assert refused.status_code == 400 and "not in team vision" in text_of(refused)

    response = client.post(f"/series/{series.pk}/transfer/", {"to": teammate.username}, follow=True)

    assert f"Series #{series.pk} is transferred to teammate" in text_of(response)
    series.refresh_from_db()
    assert series.user == teammate and {r.user_id for r in occurrences(series)} == {teammate.pk}


# --- The calendar -----------------------------------------------------------------------------------


def test_the_feed_marks_a_series_occurrences_with_the_rule_in_words(owner, cluster):
    series = nightly(owner, cluster["node1"][:1])
    single = book(owner, cluster["node1"][1:2], title="one-off")

    events = json.loads(page_client(owner).get("/calendar/events/", {"start": "2030-01-07T00:00:00Z", "end": "2030-01-14T00:00:00Z"}).content)

    by_id = {e["id"]: e for e in events}
    for occurrence in occurrences(series):
        event = by_id[str(occurrence.pk)]
        assert "series" in event["classNames"]
        assert event["extendedProps"]["series"] == {"id": series.pk, "rule": "every day at 18:00 UTC, 3 times"}
    assert "series" not in by_id[str(single.pk)]["classNames"] and by_id[str(single.pk)]["extendedProps"]["series"] is None


def test_the_form_books_a_nightly_job_that_continues_from_the_night_before(owner, cluster, training_data):
    job = {"train": "on", "model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4,
           "resume_previous": "on"}

    response = post_form(page_client(owner), repeat(cluster["node1"][:1], **job))

    assert response.status_code == 201, text_of(response)
    series = Series.objects.get()
    assert series.work["job"]["resume_from"] == "previous"
    assert {j.spec["resume_from"] for j in TrainingJob.objects.all()} == {"previous"}
    # Once: there is no previous occurrence to continue from.
    once = post_form(page_client(owner), form_data(cluster["node2"][:1], **job))
    assert once.status_code == 400
    assert "Only a repeating booking has a previous occurrence" in text_of(once)


def test_the_owner_changes_the_training_job_of_the_occurrences_to_come(owner, cluster, frozen, training_data):
    job = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4}
    series = nightly(owner, cluster["node1"][:1], work={"job": job})
    first = occurrences(series)[0]
    frozen.move_to(first.start + timedelta(minutes=5))  # the first has begun
    client = page_client(owner)
    shown = client.get(f"/series/{series.pk}/").content.decode()
    assert 'name="epochs" value="3"' in shown and "Change the job of the occurrences to come" in shown

    bad = client.post(f"/series/{series.pk}/job/", {"train": "on", "model": "yolov8n.yaml", "data": "/etc/passwd", "epochs": 5})
    assert bad.status_code == 400 and "Series #" in text_of(bad) and "was not changed" in text_of(bad)

    response = client.post(f"/series/{series.pk}/job/", {
        "train": "on", "model": "yolov8n.yaml", "data": str(training_data), "epochs": 5, "imgsz": 64, "batch": 4,
        "resume_previous": "on",
    }, follow=True)
    assert "its occurrences to come train with the new job" in text_of(response)
    specs = {j.reservation_id: (j.epochs, j.spec.get("resume_from")) for j in TrainingJob.objects.all()}
    assert specs == {r.pk: ((3, None) if r == first else (5, "previous")) for r in occurrences(series)}

    client.post(f"/series/{series.pk}/job/", {})  # untick "train": no job any more
    assert list(TrainingJob.objects.values_list("reservation_id", flat=True)) == [first.pk]


def test_the_training_job_form_is_for_the_team_only(owner, outsider, cluster, training_data):
    job = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4}
    series = nightly(owner, cluster["node1"][:1], work={"job": job})
    assert "Change the job" not in page_client(outsider).get(f"/series/{series.pk}/").content.decode()
    refused = page_client(outsider).post(f"/series/{series.pk}/job/", {"reason": "mine now"})
    assert refused.status_code == 403
    assert {j.spec["epochs"] for j in TrainingJob.objects.all()} == {3}
