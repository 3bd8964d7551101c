"""Fair sharing in the pages: where each of my teams stands this week, borrowed bookings on the
calendar and their pages, the booking form's quota preview, and a booking over the quota refused in
place with the offer to book it as borrowed time.

Time is frozen at FROZEN_NOW (Monday 09:17 UTC, in quota week 2030-W02, which starts Monday 00:00
UTC): the next slot starts at 10:00 UTC, slots are two hours, so a GPU for a slot is 2 GPU-hours.
"""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reservations.models import AuditEntry, Membership, Reservation, Team
from reservations.services import team_quota_set

from ..support import NEXT_SLOT, SLOT, book, make_user, page_client, text_of
from .test_calendar import _multi, feed, form_data, hidden_forms, post_form

pytestmark = pytest.mark.usefixtures("frozen")
PREVIEW = "/book/quota-preview/"


def quota(team, **limits):
    return team_quota_set(team=team, actor=None, reason="test", **limits)


def preview(client, gpus, *, start=NEXT_SLOT, slots=1, **extra):
    """The booking form's quota preview for a selection, as htmx asks for it."""
    params = {"gpus": [g.pk for g in gpus], "date": start.strftime("%Y-%m-%d"), "slot": start.strftime("%H:%M"),
              "slots": slots, "more": 0, **extra}
    return client.get(PREVIEW, params, headers={"HX-Request": "true"})


def state_of(response):
    return re.search(r'data-state="([\w-]+)"', response.content.decode()).group(1)


@pytest.fixture
def vision_near_its_limit(team, owner, teammate, cluster):
    """vision may book 10 GPU-hours this week and has booked 8 (owner: 2 GPUs for 2 slots at 10:00)."""
    quota(team, gpu_hours_per_week=10)
    return book(owner, cluster["node1"][:2], slots=2, title="in quota")


# --- Where my teams stand ---------------------------------------------------------------------------


def test_the_calendar_shows_each_of_my_teams_use_against_its_quota_this_week(
    team, owner, teammate, cluster, frozen
):
    quota(team, gpu_hours_per_week=10, max_gpus=4)
    book(owner, cluster["node1"][:2], slots=2)
    book(teammate, cluster["node2"][:2], slots=1, borrow=True, title="borrowed run")  # 8 + 4 > 10
    platform = Team.objects.create(name="Platform", slug="platform")
    Membership.objects.create(team=platform, user=owner)
    frozen.move_to(NEXT_SLOT + SLOT / 4)  # 10:30: the bookings hold their GPUs now

    text = text_of(page_client(owner).get("/"))

    assert "Quota this week (2030-W02)" in text
    assert "Vision: 8 of 10 GPU-h this week · 2 of 4 GPUs now · borrowed 4 GPU-h" in text
    assert "Platform: unlimited · 0 GPU-h this week · 0 GPUs now" in text


def test_only_the_viewers_own_teams_are_shown_and_a_bar_only_where_there_is_a_weekly_limit(
    team, other_team, owner, cluster
):
    quota(team, gpu_hours_per_week=10)
    quota(other_team, gpu_hours_per_week=50)
    book(owner, cluster["node1"][:2], slots=2)

    html = page_client(owner).get("/").content.decode()

    standings = html.split('id="quota-standings"')[1].split("</section>")[0]
    assert "Vision:" in standings and "Language" not in standings
    assert re.search(r'<span class="bar near" aria-hidden="true"><span class="bar-used" style="width: 80%">', standings)


def test_the_standings_cost_the_same_queries_for_one_team_as_for_three(team, owner, cluster):
    quota(team, gpu_hours_per_week=10)
    client = page_client(owner)
    client.get("/")  # sessions and caches warm

    with CaptureQueriesContext(connection) as one:
        client.get("/")
    for slug in ("a", "b"):
        extra = Team.objects.create(name=f"Team {slug}", slug=slug)
        quota(extra, gpu_hours_per_week=5)
        Membership.objects.create(team=extra, user=owner)
        book(owner, cluster["node2"][:1], start=NEXT_SLOT + (2 if slug == "a" else 3) * SLOT, team=slug)
    with CaptureQueriesContext(connection) as three:
        response = client.get("/")

    assert "Team a:" in text_of(response) and "Team b:" in text_of(response)
    assert len(three.captured_queries) == len(one.captured_queries)


def test_a_person_in_no_team_sees_no_quota_section(cluster, db):
    html = page_client(make_user("loner")).get("/").content.decode()

    assert 'id="quota-standings"' not in html


# --- Borrowed bookings on the calendar ----------------------------------------------------------------


def test_the_feed_marks_borrowed_bookings_and_the_legend_names_them(vision_near_its_limit, teammate, cluster):
    borrowed = book(teammate, cluster["node2"][:2], borrow=True)
    client = page_client(teammate)

    events = {e["id"]: e for e in feed(client).json()}

    assert borrowed.borrowed
    assert "borrowed" in events[str(borrowed.pk)]["classNames"]
    assert events[str(borrowed.pk)]["extendedProps"]["borrowed"] is True
    assert "borrowed" not in events[str(vision_near_its_limit.pk)]["classNames"]
    assert events[str(vision_near_its_limit.pk)]["extendedProps"]["borrowed"] is False
    page = client.get("/").content.decode()
    assert "Borrowed (over quota, reclaimable)" in text_of(client.get("/"))
    # The hover and focus details say what borrowed time means, in the pages' words.
    assert "may be reclaimed by a team within its quota, with 30 minutes' notice" in page


# --- The booking form's quota preview --------------------------------------------------------------


def test_the_preview_says_a_selection_within_the_quota_fits_and_what_the_week_would_hold(
    vision_near_its_limit, owner, cluster
):
    response = preview(page_client(owner), cluster["node2"][:1])

    assert response.status_code == 200 and state_of(response) == "within"
    assert "Within Vision's quota: this adds 2 GPU-h, 10 of 10 in week 2030-W02." in text_of(response)
    quota(vision_near_its_limit.team, max_gpus=4)
    both = text_of(preview(page_client(owner), cluster["node2"][:1]))
    assert "Within Vision's quota: this adds 2 GPU-h, 10 of 10 in week 2030-W02; at most 4 GPUs at once." in both


def test_the_preview_says_by_how_much_a_selection_passes_the_quota_and_that_it_may_borrow(
    vision_near_its_limit, owner, cluster
):
    response = preview(page_client(owner), cluster["node2"][:2])

    assert response.status_code == 200 and state_of(response) == "borrowable"
    text = text_of(response)
    assert "Over Vision's quota of 10 GPU-h in week 2030-W02: 8 booked, this adds 4 (2 over)." in text
    assert "Tick Borrow idle GPUs if over quota below to book it as borrowed time." in text
    ticked = text_of(preview(page_client(owner), cluster["node2"][:2], borrow="on"))
    assert "it is booked as borrowed time, which may be reclaimed by a team within its quota" in ticked


def test_the_preview_says_when_borrowing_is_over_its_limit_too(team, vision_near_its_limit, owner, cluster):
    quota(team, borrow_gpu_hours_per_week=2)

    response = preview(page_client(owner), cluster["node2"][:2])

    assert state_of(response) == "over"
    text = text_of(response)
    assert "and over its borrow limit of 2 borrowed GPU-h in week 2030-W02: 0 booked, this adds 4 (2 over)." in text
    assert "Wait for room (the next quota week starts Mon 14 Jan 00:00) or ask your team's admin." in text


def test_the_preview_names_the_gpus_at_once_limit_in_the_viewers_zone(team, owner, cluster):
    quota(team, max_gpus=2)
    book(owner, cluster["node1"][:2], slots=2)

    response = preview(page_client(owner, zone="Europe/Berlin"), cluster["node2"][:1], start=NEXT_SLOT.replace(hour=11))

    assert state_of(response) == "borrowable"
    assert (
        "Over Vision's quota of at most 2 GPUs at once: it holds 2 at Mon 7 Jan 11:00, this adds 1 (1 over); "
        "GPUs free up from Mon 7 Jan 15:00." in text_of(response)
    )


def test_the_preview_of_a_team_without_a_quota_says_it_is_unlimited(owner, cluster):
    response = preview(page_client(owner), cluster["node1"][:4], slots=12)

    assert state_of(response) == "unlimited"
    assert "Vision has no quota: only the free GPUs limit this booking." in text_of(response)


def test_the_preview_counts_more_gpus_and_start_now(vision_near_its_limit, owner, cluster):
    client = page_client(owner)

    # One picked and one more: 2 GPUs for the next slot, 4 GPU-h.
    assert state_of(preview(client, cluster["node2"][:1], more=1)) == "borrowable"
    # "Start now": the rest of this slot (09:17-10:00) on one GPU fits what is left.
    now = client.get(PREVIEW, {"gpus": cluster["node2"][0].pk, "start_now": "on", "slots": 1})
    assert state_of(now) == "within" and "this adds 0.7 GPU-h" in text_of(now)


def test_a_half_filled_form_has_nothing_to_preview_yet(vision_near_its_limit, owner, cluster):
    client = page_client(owner)

    for params in ({}, {"gpus": cluster["node1"][0].pk, "slots": 1}, {"date": "2030-01-07", "slot": "10:00", "slots": 1}):
        response = client.get(PREVIEW, params)
        assert response.status_code == 200 and state_of(response) == "incomplete"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"slots": "many"}, "Slots"),
        ({"slots": "0"}, "Slots"),
        ({"gpus": "999999"}, "GPUs"),
        ({"date": "someday"}, "Date"),
        ({"team": "999999"}, "Team"),
    ],
)
def test_a_preview_of_a_value_that_is_no_value_is_a_400_naming_the_field(
    vision_near_its_limit, owner, cluster, params, field
):
    query = {"gpus": cluster["node2"][0].pk, "date": "2030-01-07", "slot": "10:00", "slots": 1, **params}

    response = page_client(owner).get(PREVIEW, query)

    assert response.status_code == 400
    assert f"{field}:" in text_of(response)


def test_a_member_of_several_teams_is_asked_to_choose_one_before_a_preview(team, other_team, owner, cluster):
    Membership.objects.create(team=other_team, user=owner)

    response = preview(page_client(owner), cluster["node1"][:1])

    assert response.status_code == 200 and "several teams" in text_of(response)
    assert state_of(preview(page_client(owner), cluster["node1"][:1], team=other_team.pk)) == "unlimited"


def test_the_preview_reads_without_locking_anything(vision_near_its_limit, owner, cluster):
    client = page_client(owner)

    with CaptureQueriesContext(connection) as queries:
        response = preview(client, cluster["node2"][:2])

    assert state_of(response) == "borrowable"
    assert not [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"].upper()]


def test_the_preview_is_for_signed_in_people_only(cluster, db):
    response = Client().get(PREVIEW)

    assert response.status_code == 302 and response.url.startswith("/login/")


def test_the_calendar_page_carries_the_preview_and_the_borrow_box(owner, cluster):
    html = page_client(owner).get("/").content.decode()

    assert 'id="quota-preview"' in html and 'hx-get="/book/quota-preview/"' in html
    assert re.search(r'<input type="checkbox" name="borrow" id="id_borrow">\s*Borrow idle GPUs if over quota', html)


# --- Booking over the quota -----------------------------------------------------------------------------


def test_a_booking_over_the_quota_is_refused_in_place_with_the_offer_to_borrow(vision_near_its_limit, owner, cluster):
    client = page_client(owner)

    response = post_form(client, form_data(cluster["node2"][:2], title="big run"))

    assert response.status_code == 409
    text = text_of(response)
    assert "Not booked: over Vision's quota of 10 GPU-h in week 2030-W02: 8 booked, this adds 4 (2 over)." in text
    assert "Book it as borrowed time instead" in text and "with 30 minutes' notice" in text
    assert not Reservation.objects.filter(title="big run").exists()
    again = _multi(hidden_forms(response.content.decode())[0])
    assert again["borrow"] == ["on"] and again["title"] == ["big run"]
    assert again["gpus"] == [str(g.pk) for g in cluster["node2"][:2]]
    assert 'id="book-borrowed"' in response.content.decode()

    booked = client.post("/book/", again, headers={"HX-Request": "true"})

    assert booked.status_code == 201, booked.content.decode()
    borrowed = Reservation.objects.get(title="big run")
    assert borrowed.borrowed and borrowed.preemptible and borrowed.start == NEXT_SLOT
    assert borrowed.audit_entries.filter(action=AuditEntry.Action.BORROW).exists()


def test_the_borrow_box_books_over_the_quota_as_borrowed_and_the_bar_counts_it_at_once(
    vision_near_its_limit, owner, cluster
):
    response = post_form(page_client(owner), form_data(cluster["node2"][:2], title="borrowed", borrow="on"))

    assert response.status_code == 201
    assert Reservation.objects.get(title="borrowed").borrowed
    # The team's bar beside the calendar, swapped in out of band.
    oob = response.content.decode().split('id="quota-standings"')[1]
    assert 'hx-swap-oob="true"' in oob.split(">")[0]
    assert "8 of 10 GPU-h this week" in oob and "borrowed 4 GPU-h" in oob


def test_the_borrow_box_within_the_quota_books_in_quota(vision_near_its_limit, owner, cluster):
    response = post_form(page_client(owner), form_data(cluster["node2"][:1], title="fits", borrow="on"))

    assert response.status_code == 201
    assert not Reservation.objects.get(title="fits").borrowed


def test_over_the_borrow_limit_too_no_borrowing_is_offered(team, vision_near_its_limit, owner, cluster):
    quota(team, borrow_gpu_hours_per_week=2)

    for extra in ({}, {"borrow": "on"}):
        response = post_form(page_client(owner), form_data(cluster["node2"][:2], **extra))

        assert response.status_code == 409
        text = text_of(response)
        assert "borrow limit of 2 borrowed GPU-h in week 2030-W02: 0 booked, this adds 4 (2 over)." in text
        assert "Borrowing is limited too: wait for room (the next quota week starts Mon 14 Jan 00:00)" in text
        assert 'id="book-borrowed"' not in response.content.decode()
    assert Reservation.objects.count() == 1


def test_borrowed_time_at_high_priority_is_a_400_on_the_borrow_box(team, vision_near_its_limit, high_booker, cluster):
    response = post_form(page_client(high_booker), form_data(cluster["node2"][:2], priority="high", borrow="on"))

    assert response.status_code == 400
    assert "Borrow idle GPUs if over quota: Borrowed time is never high priority" in text_of(response)


def test_over_the_quota_a_booking_is_refused_before_any_preemption_is_shown(
    vision_near_its_limit, owner, outsider, cluster
):
    victim = book(outsider, cluster["node2"][:1], start=NEXT_SLOT + SLOT, priority="low", preemptible=True)

    response = post_form(page_client(owner), form_data(cluster["node2"][:1], start=NEXT_SLOT + SLOT, slots=2))

    assert response.status_code == 409 and 'id="quota-refused"' in response.content.decode()
    assert "would preempt" not in text_of(response)
    victim.refresh_from_db()
    assert victim.status == "confirmed"


def test_an_in_quota_booking_shows_that_it_takes_borrowed_time_back(vision_near_its_limit, owner, teammate, cluster):
    borrowed = book(teammate, cluster["node2"][:2], start=NEXT_SLOT + 2 * SLOT, borrow=True, title="borrowed sweep")

    response = post_form(page_client(owner), form_data(cluster["node2"][:1], start=NEXT_SLOT + 2 * SLOT))

    assert response.status_code == 200
    text = text_of(response)
    assert f"#{borrowed.pk} borrowed sweep of teammate" in text
    assert "borrowed time, taken back for a booking within its team's quota" in text


# --- A borrowed booking's pages ------------------------------------------------------------------------


def test_a_borrowed_bookings_page_says_it_may_be_reclaimed_and_with_how_much_notice(
    vision_near_its_limit, owner, cluster, settings
):
    settings.PREEMPTION_NOTICE_MINUTES = 45
    borrowed = book(owner, cluster["node2"][:2], borrow=True)

    text = text_of(page_client(owner).get(f"/bookings/{borrowed.pk}/"))

    assert "Borrowed: may be reclaimed by a team within its quota, with 45 minutes' notice." in text
    assert "Quota Borrowed: over the team's quota" in text
    in_quota = text_of(page_client(owner).get(f"/bookings/{vision_near_its_limit.pk}/"))
    assert "Borrowed:" not in in_quota and "Quota" not in in_quota.split("The booking")[1].split("History")[0]


def test_my_bookings_say_which_are_borrowed(vision_near_its_limit, owner, cluster, frozen):
    borrowed = book(owner, cluster["node2"][:2], borrow=True)
    client = page_client(owner)

    upcoming = client.get("/bookings/").content.decode().split('id="past-heading"')[0]
    assert upcoming.count("may be reclaimed by a team within its quota") == 1
    assert f'id="booking-{borrowed.pk}"' in upcoming.split("may be reclaimed")[0].rsplit("<li", 1)[1]

    frozen.move_to(NEXT_SLOT + 3 * SLOT)  # both over: listed among the past
    past = client.get("/bookings/").content.decode().split('id="past-heading"')[1]
    row = re.search(rf'<tr id="booking-{borrowed.pk}">.*?</tr>', past, re.S).group(0)
    assert "borrowed" in row
    assert "borrowed" not in re.search(rf'<tr id="booking-{vision_near_its_limit.pk}">.*?</tr>', past, re.S).group(0)


def test_my_bookings_show_the_waitlist_in_fair_share_order(team, owner, outsider, staff, cluster, frozen):
    """vision has booked GPU time lately and nlp none: nlp's request, made later, is served first."""
    book(owner, cluster["node1"][:1])
    frozen.move_to(NEXT_SLOT + SLOT + SLOT / 4)  # vision's 2 GPU-hours are behind it
    gpu, later = cluster["node2"][:1], NEXT_SLOT + 3 * SLOT
    book(staff, gpu, start=later, team="nlp")
    first = book(owner, gpu, start=later, waitlist=True)
    second = book(outsider, gpu, start=later, waitlist=True)
    assert first.status == second.status == "waitlisted" and first.created <= second.created

    mine = text_of(page_client(owner).get("/bookings/"))
    theirs = text_of(page_client(outsider).get("/bookings/"))

    assert "Waitlisted: 1 request ahead of it." in mine
    assert "Waitlisted: next in line (no request ahead of it)." in theirs
    assert "1 waitlisted request ahead of it" in text_of(page_client(owner).get(f"/bookings/{first.pk}/"))


def test_a_staff_booking_over_the_gpus_at_once_limit_shows_its_audit_reason_in_the_viewers_zone(
    team, owner, staff, cluster
):
    team_quota_set(team=team, actor=None, max_gpus=1)
    book(owner, cluster["node1"][:1])
    over = book(staff, cluster["node2"][:1], team="vision")

    text = text_of(page_client(staff, zone="Europe/Berlin").get(f"/bookings/{over.pk}/"))

    assert "holds 1 at Mon 7 Jan 2030, 11:00 (Europe/Berlin)" in text
