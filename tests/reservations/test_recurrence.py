"""The RRULE subset of a series: what is read, what is refused (naming the field), and where each
occurrence lands in its time zone, across daylight-saving changes (reservations.recurrence)."""

from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest

from reservations import recurrence
from reservations.errors import BookingError

UTC = dt_timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def starts(rule, first, zone="UTC"):
    return recurrence.expand(recurrence.parse_rule(rule), first, recurrence.zone(zone))


def test_daily_count_gives_that_many_days():
    first = datetime(2030, 1, 7, 0, 0, tzinfo=UTC)
    got = starts("FREQ=DAILY;COUNT=3", first)
    assert got == [first, first + timedelta(days=1), first + timedelta(days=2)]


def test_weekly_byday_and_interval():
    first = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)  # a Monday
    got = starts("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=4", first)
    assert [d.strftime("%a %d") for d in got] == ["Mon 07", "Thu 10", "Mon 21", "Thu 24"]


def test_until_a_date_includes_that_whole_day_in_the_zone():
    first = datetime(2030, 1, 7, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    got = starts("FREQ=DAILY;UNTIL=20300110", first, "Europe/Berlin")
    assert [d.astimezone(BERLIN).date() for d in got] == [date(2030, 1, d) for d in (7, 8, 9, 10)]


def test_weekdays_rule_reads_back_in_words():
    first = datetime(2030, 1, 6, 23, 0, tzinfo=UTC)  # Monday 00:00 in Berlin
    rule = recurrence.parse_rule("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20300131")
    assert recurrence.describe(rule, first, BERLIN, "Europe/Berlin") == (
        "every weekday at 00:00 Europe/Berlin time, until 31 Jan 2030"
    )
    assert rule.text == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20300131"


@pytest.mark.parametrize(
    "rule, says",
    [
        ("FREQ=SECONDLY;COUNT=3", "FREQ must be DAILY or WEEKLY"),
        ("FREQ=MONTHLY;COUNT=3", "FREQ must be DAILY or WEEKLY"),
        ("FREQ=DAILY", "Give exactly one of COUNT or UNTIL"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20300101", "Give exactly one of COUNT or UNTIL"),
        ("FREQ=DAILY;COUNT=367", "COUNT must be a whole number from 1 to 366"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be a whole number from 1 to 366"),
        ("FREQ=DAILY;COUNT=3;BYHOUR=4", "BYHOUR is not allowed"),
        ("FREQ=WEEKLY;BYDAY=1MO;COUNT=3", "BYDAY takes weekdays"),
        ("FREQ=DAILY;UNTIL=20300101T000000;COUNT=1", "Give exactly one"),
        ("FREQ=DAILY;UNTIL=20300101T000000", "must be in UTC"),
        ("FREQ=DAILY;UNTIL=20301301", "not a real date"),
        ("FREQ=DAILY;INTERVAL=x;COUNT=2", "INTERVAL must be a whole number"),
        ("FREQ=DAILY;COUNT=\u00b2", "COUNT must be a whole number"),
        ("FREQ=DAILY;INTERVAL=\u00b3;COUNT=2", "INTERVAL must be a whole number"),
        ("FREQ=DAILY;UNTIL=00010101T000000Z", "UNTIL must fall in the years 1970 to 9000"),
        ("FREQ=DAILY;UNTIL=99991231", "UNTIL must fall in the years 1970 to 9000"),
        ("", "Give a rule"),
        ("FREQ", "NAME=value"),
    ],
)
def test_what_the_subset_refuses_names_the_field(rule, says):
    with pytest.raises(BookingError) as refused:
        recurrence.parse_rule(rule)
    assert refused.value.field == "recurrence"
    assert says in refused.value.message


def test_an_until_beyond_the_most_occurrences_is_refused(settings):
    settings.SERIES_MAX_OCCURRENCES = 10
    first = datetime(2030, 1, 7, tzinfo=UTC)
    assert len(starts("FREQ=DAILY;UNTIL=20300116", first)) == 10
    with pytest.raises(BookingError, match="more than 10 occurrences"):
        starts("FREQ=DAILY;UNTIL=20300117", first)


def test_an_unknown_zone_is_refused_on_timezone():
    with pytest.raises(BookingError) as refused:
        recurrence.zone("Mars/Olympus")
    assert refused.value.field == "timezone"


def test_across_the_change_to_summer_time_the_wall_clock_stays_and_the_slot_contains_it():
    # 01:00 Berlin is 00:00 UTC in winter (on the two-hour grid) and 23:00 UTC in summer: the
    # occurrence is booked in the slot that contains 01:00 local, 22:00-00:00 UTC (00:00-02:00 local).
    first = datetime(2030, 3, 30, 0, 0, tzinfo=UTC)  # Saturday 01:00 CET; clocks go forward Sunday 31 March
    got = starts("FREQ=DAILY;COUNT=3", first, "Europe/Berlin")
    assert got == [
        datetime(2030, 3, 30, 0, 0, tzinfo=UTC),
        datetime(2030, 3, 31, 0, 0, tzinfo=UTC),  # 01:00 CET: the change is at 02:00 that night
        datetime(2030, 3, 31, 22, 0, tzinfo=UTC),  # 01:00 CEST = 23:00 UTC, in the slot from 22:00
    ]
    for moment in got:
        local_start = moment.astimezone(BERLIN)
        assert local_start.hour in (0, 1) and (local_start + timedelta(hours=2)).hour in (2, 3)


def test_a_skipped_wall_clock_time_is_read_with_the_offset_before_the_change():
    # 02:00 local does not exist on 31 March 2030 in Berlin: read as 02:00 CET = 01:00 UTC (03:00 CEST),
    # in the slot 00:00-02:00 UTC. No occurrence is dropped.
    first = datetime(2030, 3, 30, 1, 0, tzinfo=UTC)  # 02:00 CET, off the grid: floored to 00:00 UTC
    got = starts("FREQ=DAILY;COUNT=3", first, "Europe/Berlin")
    assert got == [
        datetime(2030, 3, 30, 0, 0, tzinfo=UTC),
        datetime(2030, 3, 31, 0, 0, tzinfo=UTC),
        datetime(2030, 4, 1, 0, 0, tzinfo=UTC),
    ]


def test_a_repeated_wall_clock_time_is_the_first_of_the_two():
    # 02:00 local happens twice on 27 October 2030 in Berlin: the first (02:00 CEST = 00:00 UTC).
    first = datetime(2030, 10, 26, 0, 0, tzinfo=UTC)  # 02:00 CEST
    got = starts("FREQ=DAILY;COUNT=3", first, "Europe/Berlin")
    assert got == [
        datetime(2030, 10, 26, 0, 0, tzinfo=UTC),
        datetime(2030, 10, 27, 0, 0, tzinfo=UTC),
        datetime(2030, 10, 28, 0, 0, tzinfo=UTC),  # 01:00 UTC = 02:00 CET, floored to its slot
    ]


def test_each_instance_keeps_its_wall_clock_start_beside_the_slot_it_is_booked_in():
    first = datetime(2030, 3, 31, 0, 0, tzinfo=UTC)  # 01:00 CET; the next day 01:00 CEST is 23:00 UTC
    found = recurrence.instances(recurrence.parse_rule("FREQ=DAILY;COUNT=2"), first, BERLIN)
    assert [(i.local.replace(tzinfo=None), i.start) for i in found] == [
        (datetime(2030, 3, 31, 1, 0), first),
        (datetime(2030, 4, 1, 1, 0), datetime(2030, 3, 31, 22, 0, tzinfo=UTC)),
    ]
    assert found[1].local.astimezone(UTC) == datetime(2030, 3, 31, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "until, utc_until",
    [
        ("20300131", datetime(2030, 1, 31, 22, 59, 59, tzinfo=UTC)),  # CET
        ("20300731", datetime(2030, 7, 31, 21, 59, 59, tzinfo=UTC)),  # CEST
    ],
)
def test_a_calendar_states_an_until_date_as_the_utc_end_of_that_local_day(until, utc_until):
    stated = recurrence.parse_rule(f"FREQ=DAILY;UNTIL={until}")
    rule = recurrence.calendar_rule(stated, BERLIN)
    assert rule.until == utc_until
    assert rule.text == f"FREQ=DAILY;UNTIL={utc_until:%Y%m%dT%H%M%S}Z"
    # The last instance at 23:00 local is still within the rule.
    first = datetime(2030, 1, 1, 22, 0, tzinfo=UTC)
    assert recurrence.instances(rule, first, BERLIN)[-1] == recurrence.instances(stated, first, BERLIN)[-1]


def test_a_calendar_states_a_series_cut_short_with_until_its_last_instance():
    rule = recurrence.parse_rule("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=10")
    last = datetime(2030, 4, 4, 1, 0, tzinfo=BERLIN)  # 23:00 UTC the day before
    cut = recurrence.calendar_rule(rule, BERLIN, last=last)
    assert cut.text == "FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20300403T230000Z"
    # A UTC UNTIL, and a rule without one, stay as they are.
    for text in ("FREQ=DAILY;UNTIL=20300103T120000Z", "FREQ=DAILY;COUNT=3"):
        assert recurrence.calendar_rule(recurrence.parse_rule(text), BERLIN).text == text


def test_a_first_start_in_the_second_pass_of_a_repeated_hour_stays_where_it_was_asked(settings):
    settings.SLOT_MINUTES = 60  # with two-hour slots no start of that second pass is on the grid
    # 01:00 UTC on 27 October 2030 is 02:00 CET, the second 02:00 of that night in Berlin.
    first = datetime(2030, 10, 27, 1, 0, tzinfo=UTC)
    got = starts("FREQ=DAILY;COUNT=2", first, "Europe/Berlin")
    assert got == [first, datetime(2030, 10, 28, 1, 0, tzinfo=UTC)]  # then 02:00 CET again
