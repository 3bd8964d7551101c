"""My bookings and a booking's page: what a person sees, and what the database holds after each form.

Pages are driven with Django's test client. Time is frozen at FROZEN_NOW (Monday 09:17 UTC): the next
slot starts at 10:00 UTC.
"""

import re
import shutil
from datetime import timedelta

import pytest
from django.db import connections
from django.test import Client
from playwright.sync_api import expect, sync_playwright

from reservations import selectors, services
from reservations.models import AuditEntry, Reservation
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, SLOT, book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")

RESULTS_CSV = (
    "                   epoch,            time,  train/box_loss,  train/cls_loss,  train/dfl_loss,"
    "  metrics/precision(B),  metrics/mAP50(B),  metrics/mAP50-95(B)\n"
    "1,12.5,3.1,4.2,2.05,0.01,0.02,0.005\n"
    "2,25.1,2.9,3.8,1.95,0.05,0.12,0.04\n"
    "3,37.0,2.7"  # the row ultralytics is still writing
)




def section(response, start_heading, end_heading=None):
    text = text_of(response)
    part = text[text.index(start_heading):]
    return part[: part.index(end_heading)] if end_heading else part


def job_for(reservation, runs_dir, *, status=TrainingJob.Status.RUNNING, checkpoint=None, results=RESULTS_CSV):
    """A job row as the node agent leaves it, with its run folder (results.csv, log) under runs_dir."""
    job = TrainingJob.objects.create(
        reservation=reservation, spec={"model": "yolov8n.yaml", "epochs": 5}, epochs=5, epoch=2, status=status,
        metrics={"train/box_loss": 2.9, "metrics/mAP50(B)": 0.12},
    )
    run = runs_dir / f"job-{job.pk}"
    (run / "train").mkdir(parents=True)
    if results is not None:
        (run / "train" / "results.csv").write_text(results)
    (run / "train.log").write_text("Epoch 1/5 done\nEpoch 2/5 done\n")
    if checkpoint is None:
        (run / "checkpoints").mkdir()
        checkpoint = run / "checkpoints" / "epoch-0002.pt"
        checkpoint.write_bytes(b"weights of epoch 2")
    job.run_dir, job.log_path, job.checkpoint = str(run), str(run / "train.log"), str(checkpoint)
    job.checkpoint_epoch = 2
    job.save()
    return job


@pytest.fixture
def runs_dir(tmp_path, settings):
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    settings.TRAINING_RUNS_DIR.mkdir()
    return settings.TRAINING_RUNS_DIR


# --- My bookings ---------------------------------------------------------------------------------


def test_my_bookings_lists_upcoming_and_past_bookings_apart(cluster, owner, teammate, frozen):
    gpu = cluster["node1"][0]
    ended = book(owner, [gpu], title="ended run")
    ahead = book(owner, [gpu], start=NEXT_SLOT + 2 * SLOT, title="next run")
    cancelled = book(owner, [cluster["node1"][1]], start=NEXT_SLOT + 2 * SLOT, title="dropped run")
    services.reservation_cancel(reservation_id=cancelled.pk, actor=owner)
    book(teammate, [cluster["node2"][0]], title="not mine")
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(minutes=1))

    response = page_client(owner).get("/bookings/")

    assert response.status_code == 200
    upcoming = section(response, "Upcoming", "Past and closed")
    past = section(response, "Past and closed")
    assert f"Booking #{ahead.pk}: next run" in upcoming and "node1/gpu0" in upcoming
    assert "ended run" not in upcoming and "dropped run" not in upcoming
    assert "ended run" in past and "dropped run" in past and "Cancelled" in past
    assert "not mine" not in text_of(response)


def test_past_bookings_are_paginated(cluster, owner):
    gpu = cluster["node1"][0]
    for i in range(21):
        reservation = book(owner, [gpu], start=NEXT_SLOT + i * SLOT, title=f"run {i:02d}")
        services.reservation_cancel(reservation_id=reservation.pk, actor=owner)
    client = page_client(owner)

    first, second = client.get("/bookings/"), client.get("/bookings/?page=2")

    assert "run 20" in text_of(first) and "run 01" in text_of(first) and "run 00" not in text_of(first)
    assert "Page 1 of 2" in text_of(first)
    assert "run 00" in text_of(second) and "run 20" not in text_of(second)


def test_the_owner_cancels_their_booking_from_my_bookings(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])
    client = page_client(owner)
    assert f"Cancel booking #{reservation.pk}" in text_of(client.get("/bookings/"))

    response = client.post(f"/bookings/{reservation.pk}/cancel/", {"next": "list", "reason": ""}, follow=True)

    assert response.redirect_chain == [("/bookings/", 302)]
    assert f"Booking #{reservation.pk} is cancelled." in text_of(response)
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CANCELLED
    assert AuditEntry.objects.get(action="cancel", reservation=reservation).actor == owner


def test_cancelling_someone_elses_booking_without_a_reason_shows_the_error_and_keeps_it(cluster, owner, team_admin):
    reservation = book(owner, cluster["node1"][:1])

    response = page_client(team_admin).post(f"/bookings/{reservation.pk}/cancel/", {"next": "booking", "reason": " "})

    assert response.status_code == 400
    assert f"Booking #{reservation.pk} was not cancelled." in text_of(response)
    assert "Reason: Say why when you change someone else's reservation." in text_of(response)
    assert 'aria-invalid="true"' in response.content.decode()
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED


def test_a_team_admin_cancels_a_teammates_booking_with_a_reason(cluster, owner, team_admin):
    reservation = book(owner, cluster["node1"][:1])
    client = page_client(team_admin)
    assert f"Cancel booking #{reservation.pk}" in text_of(client.get(f"/bookings/{reservation.pk}/"))

    response = client.post(f"/bookings/{reservation.pk}/cancel/", {"next": "booking", "reason": "node maintenance"})

    assert response.status_code == 302 and response["Location"] == f"/bookings/{reservation.pk}/"
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CANCELLED
    entry = AuditEntry.objects.get(action="cancel", reservation=reservation)
    assert (entry.actor, entry.reason) == (team_admin, "node maintenance")


def test_a_teammate_gets_no_actions_and_a_refusal_in_place_if_they_post_anyway(cluster, owner, teammate):
    reservation = book(owner, cluster["node1"][:1])
    client = page_client(teammate)
    assert f"Cancel booking #{reservation.pk}" not in text_of(client.get(f"/bookings/{reservation.pk}/"))

    response = client.post(f"/bookings/{reservation.pk}/cancel/", {"next": "booking", "reason": "mine now"})

    assert response.status_code == 403
    assert "Only the owner, a team admin or staff may change this reservation." in text_of(response)
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED


def test_the_owner_transfers_a_booking_to_a_teammate(cluster, owner, teammate):
    reservation = book(owner, cluster["node1"][:1])

    response = page_client(owner).post(
        f"/bookings/{reservation.pk}/transfer/", {"next": "list", "to": "teammate", "reason": "holiday"}
    )

    assert response.status_code == 302
    reservation.refresh_from_db()
    assert reservation.user == teammate
    assert AuditEntry.objects.get(action="transfer", reservation=reservation).reason == "holiday"


def test_a_transfer_to_nobody_names_the_field_and_changes_nothing(cluster, owner, outsider):
    reservation = book(owner, cluster["node1"][:1])
    client = page_client(owner)

    unknown = client.post(f"/bookings/{reservation.pk}/transfer/", {"next": "list", "to": "ghost"})
    other_team = client.post(f"/bookings/{reservation.pk}/transfer/", {"next": "list", "to": "outsider"})

    assert unknown.status_code == 400
    assert "New owner (username): No active user named 'ghost'." in text_of(unknown)
    assert other_team.status_code == 400
    assert "outsider is not in team vision" in text_of(other_team)
    reservation.refresh_from_db()
    assert reservation.user == owner


def test_a_booking_moves_to_a_free_window_given_in_the_viewers_zone(cluster, owner):
    reservation = book(owner, cluster["node1"][:2], slots=2)
    # The datetime-local field is read in the viewer's zone: 17:00 in Berlin (UTC+1 in January) is
    # 16:00 UTC, a slot boundary.
    response = page_client(owner, zone="Europe/Berlin").post(
        f"/bookings/{reservation.pk}/move/", {"next": "list", "start": "2030-01-07T17:00", "slots": "2"}
    )

    assert response.status_code == 302, text_of(response)
    reservation.refresh_from_db()
    assert reservation.start == NEXT_SLOT.replace(hour=16)
    assert reservation.end == NEXT_SLOT.replace(hour=20)
    assert set(reservation.allocations.values_list("start", flat=True)) == {reservation.start}


def test_a_move_off_the_slot_grid_says_so_on_the_start_field(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    response = page_client(owner).post(
        f"/bookings/{reservation.pk}/move/", {"next": "list", "start": "2030-01-07T11:00", "slots": "1"}
    )

    assert response.status_code == 400
    assert "New start: Start on a 2-hour slot boundary (UTC)" in text_of(response)
    reservation.refresh_from_db()
    assert reservation.start == NEXT_SLOT


def test_a_move_conflict_shows_the_booking_in_the_way_and_a_suggestion_moves_there_in_one_post(
    cluster, owner, teammate
):
    gpu = cluster["node1"][0]
    mine = book(owner, [gpu])
    theirs = book(teammate, [gpu], start=NEXT_SLOT + SLOT)
    client = page_client(owner)

    response = client.post(
        f"/bookings/{mine.pk}/move/", {"next": "list", "start": "2030-01-07T12:00", "slots": "1", "reason": "later"}
    )

    assert response.status_code == 409
    page = text_of(response)
    assert "The GPUs are already booked for that window." in page
    assert f"Booking #{theirs.pk} of teammate on node1/gpu0" in page
    suggestions = re.findall(
        r'<input type="hidden" name="start" value="([^"]+)">.*?<button type="submit" class="primary">'
        rf"Move booking #{mine.pk} to ([^<]+)</button>",
        response.content.decode(), flags=re.S,
    )
    assert suggestions, page
    start, label = suggestions[0]
    assert label.startswith("Mon 7 Jan, 14:00")  # the nearest free window on the same GPU, after theirs
    # Other GPUs free at the asked time are named, but a move keeps its GPUs: no button for them.
    assert "Other GPUs free then" in page and "node1/gpu1" in page

    moved = client.post(f"/bookings/{mine.pk}/move/", {"next": "list", "start": start, "slots": "1", "reason": "later"})

    assert moved.status_code == 302
    mine.refresh_from_db()
    assert mine.start == NEXT_SLOT + 2 * SLOT
    assert AuditEntry.objects.get(action="move", reservation=mine).reason == "later"


def test_a_waitlisted_booking_shows_how_many_requests_are_ahead_of_it(cluster, owner, teammate, outsider):
    gpu = cluster["node1"][0]
    book(teammate, [gpu])
    first = book(outsider, [gpu], waitlist=True)
    mine = book(owner, [gpu], waitlist=True)
    later = book(teammate, [gpu], waitlist=True)

    response = page_client(owner).get("/bookings/")

    assert (first.status, mine.status) == ("waitlisted", "waitlisted")
    assert [selectors.waitlist_position(r) for r in (first, mine, later)] == [0, 1, 2]
    assert "Waitlisted: 1 request ahead of it." in text_of(response)
    assert "1 waitlisted request ahead of it" in text_of(page_client(owner).get(f"/bookings/{mine.pk}/"))


# --- A booking's page ----------------------------------------------------------------------------


def test_the_booking_page_shows_gpus_times_in_the_viewers_zone_and_the_audit_history(cluster, owner, outsider):
    reservation = book(owner, cluster["node2"][2:4], title="fine-tune", priority="low")
    services.reservation_cancel(reservation_id=reservation.pk, actor=owner, reason="found a bug")

    response = page_client(outsider, zone="Asia/Tokyo").get(f"/bookings/{reservation.pk}/")

    assert response.status_code == 200
    page = text_of(response)
    assert f"Booking #{reservation.pk}: fine-tune" in page
    assert "GPUs node2/gpu2 (A100), node2/gpu3 (A100)" in page
    assert "Node node2" in page
    # 10:00 UTC is 19:00 in Tokyo, and the zone is named.
    assert "Start Monday 7 January 2030, 19:00 (Asia/Tokyo)" in page
    assert "Status Cancelled" in page and "Priority Low" in page and "Preemptible Yes" in page
    assert "Team Vision" in page and "Owner owner" in page
    history = section(response, "History")
    assert history.index("Created") < history.index("Cancelled")
    # Another team's member sees who did what, not why (reasons may name the booking's job).
    assert "owner Cancelled" in history and "found a bug" not in history


def test_the_booking_page_links_the_preemptor_and_the_rebooking(cluster, owner, high_booker, frozen):
    gpu = cluster["node1"][0]
    victim = book(owner, [gpu], slots=3, priority="low")
    frozen.move_to(NEXT_SLOT + timedelta(minutes=5))  # the victim has begun
    preemptor = book(high_booker, [gpu], start=NEXT_SLOT + SLOT, priority="high")
    victim.refresh_from_db()
    rebook = victim.rebooks.get()

    victim_page = text_of(page_client(owner).get(f"/bookings/{victim.pk}/"))
    rebook_page = text_of(page_client(owner).get(f"/bookings/{rebook.pk}/"))

    assert f"Preempted by Booking #{preemptor.pk} of highbooker" in victim_page
    assert f"Rebooked as Booking #{rebook.pk}" in victim_page
    assert f"Rebooked from Booking #{victim.pk}" in rebook_page


def test_a_missing_booking_is_a_404(owner, db):
    client = page_client(owner)

    assert client.get("/bookings/999999/").status_code == 404
    assert client.post("/bookings/999999/cancel/", {"reason": "x"}).status_code == 404
    assert client.get("/bookings/999999/job/").status_code == 404


def test_the_job_is_shown_to_a_teammate_but_not_to_another_team(cluster, owner, teammate, outsider, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job = job_for(reservation, runs_dir)

    teammate_page = text_of(page_client(teammate).get(f"/bookings/{reservation.pk}/"))
    outsider_client = page_client(outsider)
    outsider_page = outsider_client.get(f"/bookings/{reservation.pk}/")

    assert f"Training job #{job.pk}" in teammate_page and "epoch 2 of 5" in teammate_page
    assert "Epoch 2/5 done" in teammate_page
    assert f"/?resume={job.pk}" in page_client(teammate).get(f"/bookings/{reservation.pk}/").content.decode()
    assert outsider_page.status_code == 200 and "node1/gpu0" in text_of(outsider_page)
    assert "Training job" not in text_of(outsider_page) and "Epoch 2/5" not in text_of(outsider_page)
    assert "checkpoint" not in outsider_page.content.decode().lower()
    assert outsider_client.get(f"/bookings/{reservation.pk}/job/").status_code == 404
    assert outsider_client.get(f"/bookings/{reservation.pk}/checkpoint/").status_code == 404


def test_the_job_json_gives_status_epochs_per_epoch_series_and_the_log_tail(cluster, owner, teammate, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job_for(reservation, runs_dir)

    response = page_client(teammate).get(f"/bookings/{reservation.pk}/job/")

    assert response.status_code == 200
    state = response.json()
    assert (state["status"], state["epoch"], state["epochs"], state["live"], state["finished"]) == (
        "running", 2, 5, True, False
    )
    # The half-written third row is left out.
    assert state["series"]["epoch"] == [1, 2]
    assert state["series"]["train/box_loss"] == [3.1, 2.9]
    assert state["series"]["metrics/mAP50(B)"] == [0.02, 0.12]
    assert state["series"]["metrics/mAP50-95(B)"] == [0.005, 0.04]
    assert state["log"] == "Epoch 1/5 done\nEpoch 2/5 done\n"


def test_the_job_json_gives_the_latest_checkpoint_as_the_page_polls_it(cluster, owner, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job = job_for(reservation, runs_dir)
    client = page_client(owner)
    before = client.get(f"/bookings/{reservation.pk}/job/").json()
    newer = runs_dir / f"job-{job.pk}" / "checkpoints" / "epoch-0005.pt"
    newer.write_bytes(b"weights of epoch 5")
    TrainingJob.objects.filter(pk=job.pk).update(epoch=5, checkpoint=str(newer), checkpoint_epoch=5)

    after = client.get(f"/bookings/{reservation.pk}/job/").json()

    assert (before["checkpoint"], before["checkpoint_epoch"], before["resumable"]) == (True, 2, True)
    assert (after["checkpoint"], after["checkpoint_epoch"], after["resumable"]) == (True, 5, True)
    assert b"".join(client.get(f"/bookings/{reservation.pk}/checkpoint/").streaming_content) == b"weights of epoch 5"


def test_a_job_without_a_checkpoint_says_none_yet_in_the_page_and_the_json(cluster, owner, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job = job_for(reservation, runs_dir)
    TrainingJob.objects.filter(pk=job.pk).update(checkpoint="", checkpoint_epoch=None)
    client = page_client(owner)

    state = client.get(f"/bookings/{reservation.pk}/job/").json()
    page = section(client.get(f"/bookings/{reservation.pk}/"), "Checkpoint", "Losses and mAP")

    assert (state["checkpoint"], state["checkpoint_epoch"], state["resumable"]) == (False, None, False)
    assert "none yet" in page and "Download checkpoint" not in page and "Resume" not in page


def test_the_job_history_spans_the_job_it_resumed_and_falls_back_to_the_stored_epoch(cluster, owner, runs_dir):
    first = job_for(book(owner, cluster["node1"][:1]), runs_dir, status=TrainingJob.Status.STOPPED)
    second = job_for(
        book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT), runs_dir,
        results="epoch,time,train/box_loss,metrics/mAP50(B)\n3,5.0,2.5,0.2\n",
    )
    second.resumed_from = first
    second.save()
    bare = job_for(book(owner, cluster["node2"][:1]), runs_dir, results=None)

    resumed = page_client(owner).get(f"/bookings/{second.reservation_id}/job/").json()
    fallback = page_client(owner).get(f"/bookings/{bare.reservation_id}/job/").json()

    assert resumed["series"]["epoch"] == [1, 2, 3]
    assert resumed["series"]["train/box_loss"] == [3.1, 2.9, 2.5]
    assert resumed["series"]["train/cls_loss"] == [4.2, 3.8, None]
    assert fallback["series"]["epoch"] == [2]
    assert fallback["series"]["metrics/mAP50(B)"] == [0.12]


def test_a_loop_of_resumes_in_the_data_is_followed_once_round(cluster, owner, runs_dir):
    first = job_for(book(owner, cluster["node1"][:1]), runs_dir, status=TrainingJob.Status.STOPPED)
    second = job_for(
        book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT), runs_dir,
        results="epoch,time,train/box_loss,metrics/mAP50(B)\n3,5.0,2.5,0.2\n",
    )
    TrainingJob.objects.filter(pk=second.pk).update(resumed_from=first)
    TrainingJob.objects.filter(pk=first.pk).update(resumed_from=second)

    series = page_client(owner).get(f"/bookings/{second.reservation_id}/job/").json()["series"]

    assert series["epoch"] == [1, 2, 3] and series["train/box_loss"] == [3.1, 2.9, 2.5]


def test_the_owner_downloads_the_checkpoint(cluster, owner, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job = job_for(reservation, runs_dir)

    response = page_client(owner).get(f"/bookings/{reservation.pk}/checkpoint/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"weights of epoch 2"
    assert f'filename="job-{job.pk}-epoch-0002.pt"' in response["Content-Disposition"]


def test_a_checkpoint_outside_the_runs_folder_is_refused(cluster, owner, runs_dir, tmp_path):
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"not for download")
    reservation = book(owner, cluster["node1"][:1])
    job_for(reservation, runs_dir, checkpoint=secret)
    escaping = book(owner, cluster["node1"][1:2])
    job_for(escaping, runs_dir, checkpoint=runs_dir / ".." / "secret.pt")
    linked = book(owner, cluster["node1"][2:3])
    (runs_dir / "link.pt").symlink_to(secret)
    job_for(linked, runs_dir, checkpoint=runs_dir / "link.pt")
    client = page_client(owner)

    for booking in (reservation, escaping, linked):
        response = client.get(f"/bookings/{booking.pk}/checkpoint/")
        assert response.status_code == 404
        assert b"not for download" not in response.content
        assert "Download checkpoint" not in text_of(client.get(f"/bookings/{booking.pk}/"))


# --- Security ------------------------------------------------------------------------------------


def test_a_signed_out_visitor_is_sent_to_sign_in_and_changes_nothing(cluster, owner, runs_dir):
    reservation = book(owner, cluster["node1"][:1])
    job_for(reservation, runs_dir)
    anonymous = Client()

    for url in ("/bookings/", f"/bookings/{reservation.pk}/", f"/bookings/{reservation.pk}/job/",
                f"/bookings/{reservation.pk}/checkpoint/"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), url
    posted = anonymous.post(f"/bookings/{reservation.pk}/cancel/", {"reason": "x"})

    assert posted.status_code == 302 and posted["Location"].startswith("/login/")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED


def test_every_action_needs_the_csrf_token_and_a_post(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])
    client = page_client(owner, enforce_csrf_checks=True)
    page = client.get("/bookings/").content.decode()

    assert page.count('name="csrfmiddlewaretoken"') >= 4  # cancel, transfer, move, sign out
    assert client.post(f"/bookings/{reservation.pk}/cancel/", {"next": "list"}).status_code == 403
    assert client.get(f"/bookings/{reservation.pk}/cancel/").status_code == 405
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED


def test_action_buttons_and_fields_have_accessible_names(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    page = page_client(owner).get("/bookings/").content.decode()

    for action in ("Cancel", "Transfer", "Move"):
        assert re.search(rf'<button type="submit"[^>]*>{action} booking #{reservation.pk}</button>', page)
    for field in ("cancel-{}-reason", "transfer-{}-to", "move-{}-start", "move-{}-slots"):
        field_id = field.format(reservation.pk)
        assert f'<label for="{field_id}"' in page and f'id="{field_id}"' in page
    # The move form steps through slot boundaries from the next one (10:00 UTC) on.
    assert 'min="2030-01-07T10:00"' in page and 'step="7200"' in page


# --- In a browser --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_in_a_browser_the_chart_is_drawn_and_the_job_and_its_checkpoint_refresh_until_it_finishes(
    live_server, cluster, owner, runs_dir, monkeypatch
):
    # Playwright's sync API runs an event loop in this thread; the ORM calls below are plain sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    reservation = book(owner, cluster["node1"][:1])
    job = job_for(reservation, runs_dir)
    session = page_client(owner).cookies["sessionid"].value
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or None)
        try:
            context = browser.new_context(timezone_id="UTC")
            context.add_cookies([
                {"name": "sessionid", "value": session, "url": live_server.url},
                {"name": "tz", "value": "UTC", "url": live_server.url},
            ])
            page = context.new_page()
            problems = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))

            page.goto(f"{live_server.url}/bookings/{reservation.pk}/")
            page.wait_for_selector("#job-chart canvas")
            assert page.text_content("#chart-summary") == "2 epochs recorded."
            assert page.text_content("#job-checkpoint a[download]") == "Download checkpoint (epoch 2)"

            run = runs_dir / f"job-{job.pk}"
            with open(run / "train" / "results.csv", "a") as results:
                results.write(",3.5,1.9,0.1,0.2,0.08\n")  # the third row, now whole
            with open(run / "train.log", "a") as log:
                log.write("Epoch 3/5 done\n")
            newer = run / "checkpoints" / "epoch-0003.pt"
            newer.write_bytes(b"weights of epoch 3")
            TrainingJob.objects.filter(pk=job.pk).update(
                epoch=3, status=TrainingJob.Status.COMPLETED, checkpoint=str(newer), checkpoint_epoch=3
            )
            # Inside Playwright's sync API this ran in a context of its own, so on a connection of its
            # own: close it, or the test database cannot be dropped at the end.
            connections["default"].close()
            # The page polls every few seconds while the job runs (the CSP forbids eval: no wait_for_function).
            expect(page.locator("#job-epoch")).to_have_text("epoch 3 of 5", timeout=20000)

            assert page.text_content("#job-status") == "Completed"
            assert "Epoch 3/5 done" in page.text_content("#job-log")
            assert page.text_content("#chart-summary") == "3 epochs recorded."
            assert page.text_content("#job-checkpoint a[download]") == "Download checkpoint (epoch 3)"
            assert page.get_attribute("#job-checkpoint a[download]", "href") == f"/bookings/{reservation.pk}/checkpoint/"
            assert problems == []
        finally:
            browser.close()
