"""Recurring bookings through the services: made with the occurrences the horizon holds, the rest
booked by beat (twice over, never twice), the three conflict modes, quotas week by week, and
cancelling one, the following or all, changing and transferring, each audited."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError

from reservations import recurrence, services
from reservations.errors import BookingError, SeriesConflict
from reservations.models import GOING, AuditEntry, Node, Notice, Reservation, Series, TeamQuota
from reservations.services.locks import is_occurrence_violation
from reservations.services.series import _extend, series_cancel, series_change, series_create, series_extend, series_transfer
from trainer.models import TrainingJob

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, at_once, book, make_user

pytestmark = pytest.mark.usefixtures("frozen")
DAY = timedelta(days=1)
Status = Reservation.Status


def nightly(owner, gpus, *, count=3, now=FROZEN_NOW, **kwargs):
    kwargs.setdefault("slots", 2)
    return series_create(
        user=owner, start=kwargs.pop("start", NEXT_SLOT + 4 * SLOT), rule=kwargs.pop("rule", f"FREQ=DAILY;COUNT={count}"),
        gpu_ids=[g.pk for g in gpus], title="nightly fine-tune", now=now, **kwargs,
    )


def occurrences(series):
    return list(Reservation.objects.filter(series=series, rebook_of=None).order_by("start"))


def test_a_daily_series_books_each_night_as_an_ordinary_booking(cluster, owner):
    gpus = cluster["node1"]
    result = nightly(owner, gpus)
    booked = occurrences(result.series)
    assert [r.start for r in booked] == [NEXT_SLOT + 4 * SLOT + n * DAY for n in range(3)]
    assert all(r.status == Status.CONFIRMED and r.end - r.start == 2 * SLOT for r in booked)
    assert all(sorted(a.gpu_id for a in r.allocations.all()) == [g.pk for g in gpus] for r in booked)
    assert [o.outcome for o in result.occurrences] == ["booked"] * 3
    # Each booking has its own create entry; the series its series_create.
    assert AuditEntry.objects.filter(action=AuditEntry.Action.CREATE, reservation__series=result.series).count() == 3
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SERIES_CREATE)
    assert entry.target == f"series:{result.series.pk}" and entry.reason.startswith("every day at 18:00 UTC")


def test_occurrences_beyond_the_horizon_wait_for_beat_which_books_each_once(cluster, owner, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 3
    result = nightly(owner, cluster["node1"][:1], count=6)
    assert [o.outcome for o in result.occurrences] == ["booked"] * 3 + ["later"] * 3
    assert len(occurrences(result.series)) == 3
    assert series_extend(now=FROZEN_NOW) == 0  # nothing new came within the horizon
    frozen.move_to(FROZEN_NOW + 2 * DAY)
    # Two beats at once (or a retry): each occurrence is booked once.
    assert series_extend() == 2
    assert series_extend() == 0
    booked = occurrences(result.series)
    assert len(booked) == 5 and len({r.occurrence for r in booked}) == 5
    frozen.move_to(FROZEN_NOW + 10 * DAY)
    assert series_extend() == 0  # the last one's time is past: never booked late
    assert len(occurrences(result.series)) == 5
    # Beat is done with it: its hourly read passes it over from now on.
    assert not Series.objects.filter(GOING).exists()


def test_the_database_refuses_a_second_booking_of_one_occurrence(cluster, owner):
    result = nightly(owner, cluster["node1"][:1], count=1)
    first = occurrences(result.series)[0]
    with pytest.raises(IntegrityError) as refused:
        services.reservation_create(
            user=owner, start=first.start + 5 * DAY, slots=1, gpu_ids=[cluster["node2"][0].pk], now=FROZEN_NOW,
            series=result.series, occurrence=first.occurrence,
        )
    assert is_occurrence_violation(refused.value)


def test_fail_books_nothing_and_lists_each_taken_occurrence(cluster, owner, teammate):
    gpus = cluster["node1"][:2]
    in_the_way = book(teammate, gpus[:1], start=NEXT_SLOT + 4 * SLOT + DAY, slots=1)
    with pytest.raises(SeriesConflict) as refused:
        nightly(owner, gpus)
    blocked = refused.value.occurrences
    assert [p.start for p in blocked] == [NEXT_SLOT + 4 * SLOT + DAY]
    assert blocked[0].state == "taken" and f"#{in_the_way.pk}" in blocked[0].detail
    assert refused.value.suggestions[blocked[0].start]  # somewhere else to go
    assert not Series.objects.exists() and not Reservation.objects.filter(series__isnull=False).exists()


def test_skip_books_the_free_ones_and_tells_the_owner(cluster, owner, teammate):
    gpus = cluster["node1"][:2]
    book(teammate, gpus[:1], start=NEXT_SLOT + 4 * SLOT + DAY, slots=1)
    result = nightly(owner, gpus, on_conflict="skip")
    assert [o.outcome for o in result.occurrences] == ["booked", "skipped", "booked"]
    assert "already booked" in result.of("skipped")[0].reason
    assert len(occurrences(result.series)) == 2
    notice = Notice.objects.get(user=owner, kind=Notice.Kind.SERIES_SKIPPED)
    assert "1 occurrence(s)" in notice.message and notice.data["series"] == result.series.pk
    assert result.series.skipped[0]["at"] == (NEXT_SLOT + 4 * SLOT + DAY).isoformat()


def test_waitlist_puts_the_taken_ones_on_the_waitlist(cluster, owner, teammate):
    gpus = cluster["node1"][:1]
    taken = book(teammate, gpus, start=NEXT_SLOT + 4 * SLOT + DAY, slots=1)
    result = nightly(owner, gpus, on_conflict="waitlist")
    assert [o.outcome for o in result.occurrences] == ["booked", "waitlisted", "booked"]
    services.reservation_cancel(reservation_id=taken.pk, actor=teammate)
    services.waitlist_promote(now=FROZEN_NOW)  # what tick does
    waiting = occurrences(result.series)[1]
    waiting.refresh_from_db()
    assert waiting.status == Status.CONFIRMED  # promoted when the window freed


def test_quota_counts_each_occurrence_in_its_week(cluster, owner, team):
    # 4 GPU-hours a night on one GPU; 10 a week allowed: two nights fit, the third passes the limit.
    TeamQuota.objects.create(team=team, gpu_hours_per_week=10)
    gpus = cluster["node1"][:1]
    with pytest.raises(SeriesConflict) as refused:
        nightly(owner, gpus)
    assert [p.state for p in refused.value.occurrences] == ["over_quota"]
    assert "over its quota of 10 GPU-hours" in refused.value.occurrences[0].detail
    result = nightly(owner, gpus, on_conflict="skip")
    assert [o.outcome for o in result.occurrences] == ["booked", "booked", "skipped"]
    assert "quota" in result.of("skipped")[0].reason


def test_a_borrowing_series_books_over_quota_occurrences_as_borrowed_time(cluster, owner, team):
    TeamQuota.objects.create(team=team, gpu_hours_per_week=10)
    result = nightly(owner, cluster["node1"][:1], borrow=True)
    assert [r.borrowed for r in occurrences(result.series)] == [False, False, True]


def test_a_rule_with_overlapping_occurrences_or_a_start_off_the_grid_is_refused(cluster, owner):
    with pytest.raises(BookingError) as refused:
        nightly(owner, cluster["node1"][:1], slots=13)
    assert refused.value.field == "slots"
    with pytest.raises(BookingError) as refused:
        nightly(owner, cluster["node1"][:1], start=NEXT_SLOT + timedelta(minutes=30))
    assert refused.value.field == "start"
    with pytest.raises(BookingError) as refused:
        nightly(owner, cluster["node1"][:1], on_conflict="retry")
    assert refused.value.field == "on_conflict"


def test_cancel_one_following_and_all(cluster, owner, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 3
    series = nightly(owner, cluster["node1"][:1], count=6).series
    booked = occurrences(series)
    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=booked[1].occurrence)
    assert [r.status for r in occurrences(series)] == [Status.CONFIRMED, Status.CANCELLED, Status.CONFIRMED]
    # Not booked yet (beyond the horizon): beat never books it.
    fifth = NEXT_SLOT + 4 * SLOT + 4 * DAY
    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=fifth)
    frozen.move_to(FROZEN_NOW + 3 * DAY)
    series_extend()
    assert fifth not in [r.occurrence for r in occurrences(series)]
    assert len(occurrences(series)) == 5
    # This one and the following.
    fourth = NEXT_SLOT + 4 * SLOT + 3 * DAY
    series_cancel(series_id=series.pk, actor=owner, scope="following", occurrence=fourth)
    frozen.move_to(FROZEN_NOW + 6 * DAY)
    series_extend()  # passes over the cancelled ones to the last: done
    assert not Series.objects.filter(GOING).exists()
    statuses = {r.occurrence: r.status for r in occurrences(series)}
    assert statuses[fourth] == Status.CANCELLED and statuses[fourth + 2 * DAY] == Status.CANCELLED
    entries = AuditEntry.objects.filter(action=AuditEntry.Action.SERIES_CANCEL, target=f"series:{series.pk}")
    assert entries.count() == 3
    series_cancel(series_id=series.pk, actor=owner, scope="all")
    assert not Reservation.objects.filter(series=series, status__in=Reservation.OPEN_STATUSES).exists()
    with pytest.raises(BookingError):
        series_cancel(series_id=series.pk, actor=owner, scope="all")


def test_cancel_refuses_a_time_that_is_no_occurrence_and_asks_others_why(cluster, owner, teammate, team_admin):
    series = nightly(owner, cluster["node1"][:1]).series
    with pytest.raises(BookingError) as refused:
        series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=NEXT_SLOT + 4 * SLOT + timedelta(hours=2))
    assert refused.value.field == "occurrence"
    with pytest.raises(PermissionDenied):
        series_cancel(series_id=series.pk, actor=teammate, scope="all")
    with pytest.raises(BookingError) as refused:
        series_cancel(series_id=series.pk, actor=team_admin, scope="all")
    assert refused.value.field == "reason"
    series_cancel(series_id=series.pk, actor=team_admin, scope="all", reason="the project ended")
    notice = Notice.objects.filter(user=owner, kind=Notice.Kind.CANCELLED).first()
    assert notice is not None and "the project ended" in notice.message


def test_a_change_reaches_the_occurrences_not_begun(cluster, owner, frozen):
    series = nightly(owner, cluster["node1"][:1]).series
    first = occurrences(series)[0]
    frozen.move_to(first.start + timedelta(minutes=5))  # the first has begun
    series_change(series_id=series.pk, actor=owner, title="nightly v2", priority="low")
    titles = [(r.title, r.priority) for r in occurrences(series)]
    assert titles == [("nightly fine-tune", "normal"), ("nightly v2", "low"), ("nightly v2", "low")]
    series.refresh_from_db()
    assert series.title == "nightly v2"
    assert AuditEntry.objects.filter(action=AuditEntry.Action.SERIES_CHANGE).count() == 1
    assert AuditEntry.objects.filter(action=AuditEntry.Action.UPDATE, reservation__series=series).count() == 2


def test_transfer_within_the_team(cluster, owner, teammate, outsider):
    series = nightly(owner, cluster["node1"][:1]).series
    with pytest.raises(BookingError) as refused:
        series_transfer(series_id=series.pk, actor=owner, to=outsider.username)
    assert refused.value.field == "to" and "not in team vision" in refused.value.message
    series_transfer(series_id=series.pk, actor=owner, to=teammate.username)
    assert {r.user_id for r in occurrences(series)} == {teammate.pk}
    series.refresh_from_db()
    assert series.user == teammate


def test_beat_skips_for_an_owner_who_left_the_team_and_says_so(cluster, owner, team, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 2
    series = nightly(owner, cluster["node1"][:1], count=4).series
    owner.memberships.all().delete()
    frozen.move_to(FROZEN_NOW + 2 * DAY)
    series_extend()
    series_extend()
    assert Notice.objects.filter(user=owner, kind=Notice.Kind.SERIES_SKIPPED).count() == 1, list(Notice.objects.values_list("message", flat=True))
    series.refresh_from_db()
    assert any("can no longer book" in s["reason"] for s in series.skipped)


def test_a_new_user_in_another_zone_books_at_their_wall_clock(cluster, db, team):
    berliner = make_user("berliner", team)
    # Tuesday 00:00 in Berlin (23:00 UTC Monday) is off the two-hour UTC grid: refused, with the advice.
    with pytest.raises(BookingError) as refused:
        series_create(
            user=berliner, start=datetime(2030, 1, 7, 23, 0, tzinfo=dt_timezone.utc), slots=1, rule="FREQ=DAILY;COUNT=2",
            tz="Europe/Berlin", gpu_count=1, now=FROZEN_NOW,
        )
    assert refused.value.field == "start"
    result = series_create(
        user=berliner, start=datetime(2030, 1, 8, 0, 0, tzinfo=dt_timezone.utc), slots=1, rule="FREQ=WEEKLY;BYDAY=TU,TH;COUNT=2",
        tz="Europe/Berlin", gpu_count=1, now=FROZEN_NOW,
    )
    assert [r.start.isoformat() for r in occurrences(result.series)] == ["2030-01-08T00:00:00+00:00", "2030-01-10T00:00:00+00:00"]



@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_book_each_occurrence_once_and_tell_of_a_skip_once(frozen, settings, request):
    cluster = request.getfixturevalue("cluster")
    owner = make_user("owner", request.getfixturevalue("team"))
    teammate = make_user("teammate", owner.teams.get())
    gpu = cluster["node1"][:1]
    book(teammate, gpu, start=NEXT_SLOT + 4 * SLOT + 3 * DAY)  # the fourth night is taken
    settings.BOOKING_HORIZON_DAYS = 2
    series = nightly(owner, gpu, count=8, on_conflict="skip").series
    assert len(occurrences(series)) == 2
    settings.BOOKING_HORIZON_DAYS = 3
    frozen.move_to(FROZEN_NOW + 2 * DAY)
    booked = at_once([series_extend, series_extend, series_extend])
    assert sum(booked) == 2  # nights 3 and 5 (4 is taken), each by one of the beats
    rows = occurrences(series)
    assert len(rows) == 4 and len({r.occurrence for r in rows}) == 4
    assert Notice.objects.filter(user=owner, kind=Notice.Kind.SERIES_SKIPPED).count() == 1, list(Notice.objects.values_list("message", flat=True))
    series.refresh_from_db()
    assert [s["at"] for s in series.skipped] == [(NEXT_SLOT + 4 * SLOT + 3 * DAY).isoformat()]


def test_a_new_job_template_reaches_the_waiting_jobs_of_the_coming_occurrences(cluster, owner, frozen, training_data):
    job = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4}
    series = nightly(owner, cluster["node1"][:1], work={"job": job}).series
    first, second, third = occurrences(series)
    frozen.move_to(first.start + timedelta(minutes=1))
    TrainingJob.objects.filter(reservation=first).update(status=TrainingJob.Status.RUNNING)
    series_change(series_id=series.pk, actor=owner, work={"job": {**job, "epochs": 7}}, reason="longer")
    epochs = {j.reservation_id: (j.epochs, j.spec["epochs"]) for j in TrainingJob.objects.all()}
    assert epochs == {first.pk: (3, 3), second.pk: (7, 7), third.pk: (7, 7)}
    updates = AuditEntry.objects.filter(action=AuditEntry.Action.UPDATE, reservation__series=series)
    assert sorted(updates.values_list("reservation_id", flat=True)) == [second.pk, third.pk]
    assert updates.first().after == {"work": {"job": {**TrainingJob.objects.get(reservation=second).spec}}}
    series_change(series_id=series.pk, actor=owner, work={"job": None})
    assert list(TrainingJob.objects.values_list("reservation_id", flat=True)) == [first.pk]


def test_a_berlin_series_keeps_its_wall_clock_across_the_change_to_summer_time(cluster, db, team, frozen):
    # Every day at 01:00 Berlin time: 00:00 UTC in winter, on the two-hour grid; from 31 March 2030
    # (summer time) 01:00 is 23:00 UTC, booked in the slot that contains it: 22:00-00:00 UTC.
    frozen.move_to(datetime(2030, 3, 25, 9, 0, tzinfo=dt_timezone.utc))
    berliner = make_user("berliner", team)
    result = series_create(
        user=berliner, start=datetime(2030, 3, 29, 0, 0, tzinfo=dt_timezone.utc), slots=1, rule="FREQ=DAILY;COUNT=4",
        tz="Europe/Berlin", gpu_ids=[cluster["node1"][0].pk],
    )
    starts = [r.start.strftime("%d %H:%M") for r in occurrences(result.series)]
    assert starts == ["29 00:00", "30 00:00", "31 00:00", "31 22:00"]
    assert "every day at 01:00 Europe/Berlin time, 4 times" == recurrence_words(result.series)


def recurrence_words(series):
    zone = recurrence.zone(series.time_zone)
    return recurrence.describe(recurrence.parse_rule(series.rule), series.first_start, zone, series.time_zone)


def test_an_occurrence_cancelled_by_its_local_time_stays_cancelled(cluster, owner, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 1
    series = nightly(owner, cluster["node1"][:1], count=3).series  # the first night booked
    third = NEXT_SLOT + 4 * SLOT + 2 * DAY
    in_berlin = third.astimezone(ZoneInfo("Europe/Berlin"))
    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=in_berlin)
    series.refresh_from_db()
    assert series.cancelled_occurrences == [third.isoformat()]
    frozen.move_to(FROZEN_NOW + 2 * DAY)
    series_extend()
    assert third not in [r.occurrence for r in occurrences(series)]


def test_raising_a_series_to_high_makes_its_coming_bookings_high_and_not_preemptible(cluster, high_booker, frozen):
    series = nightly(high_booker, cluster["node1"][:1], priority="low").series
    assert {r.preemptible for r in occurrences(series)} == {True}
    series_change(series_id=series.pk, actor=high_booker, priority="high")
    assert {(r.priority, r.preemptible) for r in occurrences(series)} == {("high", False)}
    series_change(series_id=series.pk, actor=high_booker, priority="low")
    assert {(r.priority, r.preemptible) for r in occurrences(series)} == {("low", True)}


def test_staff_cannot_raise_a_series_to_a_priority_its_owner_may_not_book(cluster, owner, staff):
    series = nightly(owner, cluster["node1"][:1]).series
    with pytest.raises(PermissionDenied):
        series_change(series_id=series.pk, actor=staff, priority="high", reason="urgent")
    series.refresh_from_db()
    assert series.priority == "normal" and {r.priority for r in occurrences(series)} == {"normal"}


def test_a_borrowing_series_cannot_be_raised_to_high(cluster, high_booker, team):
    TeamQuota.objects.create(team=team, gpu_hours_per_week=10)
    series = nightly(high_booker, cluster["node1"][:1], borrow=True).series
    with pytest.raises(BookingError) as refused:
        series_change(series_id=series.pk, actor=high_booker, priority="high")
    assert refused.value.field == "borrow"


def test_cancelling_all_goes_on_past_a_night_passed_to_someone_else(cluster, owner, teammate):
    series = nightly(owner, cluster["node1"][:1]).series
    first, second, third = occurrences(series)
    services.reservation_transfer(reservation_id=second.pk, actor=owner, to=teammate.username)
    services.reservation_cancel(reservation_id=first.pk, actor=owner)  # ended before the series' cancel
    series_cancel(series_id=series.pk, actor=owner, scope="all")
    # The owner may no longer cancel the teammate's night: it stays theirs, and the rest go on.
    assert [r.status for r in occurrences(series)] == [Status.CANCELLED, Status.CONFIRMED, Status.CANCELLED]


def test_beat_skips_and_tells_when_the_owner_lost_the_right_to_book_high(cluster, high_booker, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 1
    series = nightly(high_booker, cluster["node1"][:1], priority="high", count=3).series
    high_booker.user_permissions.clear()
    frozen.move_to(FROZEN_NOW + DAY)
    assert series_extend() == 0
    series.refresh_from_db()
    assert series.skipped and "high priority" in series.skipped[0]["reason"]
    assert Notice.objects.filter(user=high_booker, kind=Notice.Kind.SERIES_SKIPPED).count() == 1


def test_a_night_cancelled_while_beat_books_it_is_not_booked(cluster, owner, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 1
    series = nightly(owner, cluster["node1"][:1], count=3).series
    stale = Series.objects.select_related("user", "team").get(pk=series.pk)  # beat read it before the cancel
    second = NEXT_SLOT + 4 * SLOT + DAY
    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=second)
    frozen.move_to(FROZEN_NOW + DAY)
    _extend(stale, FROZEN_NOW + DAY)
    assert second not in [r.occurrence for r in occurrences(series)]


def test_each_occurrence_counts_in_its_own_quota_week(cluster, owner, team):
    # 4 GPU-hours a night, 10 a week: Friday and Saturday fit, Sunday would pass the week's limit,
    # and Monday begins a new quota week (weeks start Monday 00:00 UTC).
    TeamQuota.objects.create(team=team, gpu_hours_per_week=10)
    friday = NEXT_SLOT + 4 * SLOT + 4 * DAY  # Friday 11 January 2030, 18:00 UTC
    result = nightly(owner, cluster["node1"][:1], count=4, start=friday, on_conflict="skip")
    assert [(o.start.strftime("%a"), o.outcome) for o in result.occurrences] == [
        ("Fri", "booked"), ("Sat", "booked"), ("Sun", "skipped"), ("Mon", "booked"),
    ]


def test_staff_cancel_a_series_from_the_admin(cluster, owner, admin_client):
    series = nightly(owner, cluster["node1"][:1]).series
    listed = admin_client.get("/admin/reservations/series/")
    assert "every day at 18:00 UTC, 3 times" in listed.content.decode()
    response = admin_client.post(
        "/admin/reservations/series/", {"action": "cancel_selected", "_selected_action": [series.pk]}, follow=True
    )
    assert "Cancelled 1 series." in response.content.decode()
    series.refresh_from_db()
    assert series.cancelled_at is not None
    assert {r.status for r in occurrences(series)} == {Status.CANCELLED}


def test_a_staff_series_passes_a_quota_as_staff_bookings_do_now_and_when_beat_books(cluster, staff, team, frozen, settings):
    # Staff pass a quota when they book (the audit says which limit), and beat books a series'
    # occurrences as its owner: with the owner's rights, the later ones too.
    TeamQuota.objects.create(team=team, gpu_hours_per_week=4)
    settings.BOOKING_HORIZON_DAYS = 2
    series = nightly(staff, cluster["node1"][:1], count=4, team=team.slug).series
    assert len(occurrences(series)) == 2  # 8 GPU-hours in a week of 4: booked, by staff
    frozen.move_to(FROZEN_NOW + 2 * DAY)
    series_extend()
    assert len(occurrences(series)) == 4
    over = AuditEntry.objects.filter(reservation__series=series, reason__startswith="Booked over the quota by staff")
    assert over.count() == 3  # all but the first, which fits


def test_a_series_on_a_node_that_is_away_tells_its_owner_once_not_each_night(cluster, owner, training_data):
    Node.objects.update(online=False)
    job = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4}
    nightly(owner, cluster["node1"][:1], count=5, work={"job": job})
    offline = Notice.objects.filter(user=owner, kind=Notice.Kind.NODE_OFFLINE)
    assert offline.count() == 1 and offline.get().data["node"] == "node1"
    # Once read, the next series (or night) on it tells again.
    offline.update(read_at=FROZEN_NOW)
    nightly(owner, cluster["node1"][1:2], count=2, work={"job": job})
    assert offline.count() == 2
