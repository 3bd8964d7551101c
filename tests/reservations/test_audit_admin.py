"""The audit log in the admin: filters (action, actor, team, booking, a date range), search, and a
streamed CSV export of exactly what the list shows; read-only, and for staff only."""

import csv
import io
import types
from datetime import datetime, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reservations import services
from reservations.admin import EstimatedCountPaginator
from reservations.models import AuditEntry

from ..support import NEXT_SLOT, book, make_user

LIST = "/admin/reservations/auditentry/"
EXPORT = "/admin/reservations/auditentry/export.csv"


def at(day, hour):
    return datetime(2030, 1, day, hour, tzinfo=dt_timezone.utc)


@pytest.fixture
def root(log):
    """A superuser signed in after the log was written (the clock moved on a day)."""
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def log(cluster, owner, outsider, frozen):
    """Vision's two bookings (one cancelled "Plans changed" on the 8th) and Language's one, booked on
    the 7th."""
    kept = book(owner, cluster["node1"][:1], title="kept")
    dropped = book(owner, cluster["node1"][1:2], title="dropped", start=NEXT_SLOT)
    theirs = book(outsider, cluster["node2"][:1], title="theirs")
    frozen.move_to(at(8, 9))
    services.reservation_cancel(reservation_id=dropped.pk, actor=owner, reason="Plans changed")
    return {"kept": kept, "dropped": dropped, "theirs": theirs}


def listed(client, **query):
    response = client.get(LIST, query)
    assert response.status_code == 200
    return sorted((e.action, e.reservation_id) for e in response.context["cl"].result_list)


def exported(response):
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_each_filter_narrows_the_list(root, log, owner, outsider, other_team):
    kept, dropped, theirs = log["kept"].pk, log["dropped"].pk, log["theirs"].pk

    assert listed(root, action__exact="cancel") == [("cancel", dropped)]
    assert listed(root, actor__id__exact=outsider.pk) == [("create", theirs)]
    assert listed(root, reservation__team__id__exact=other_team.pk) == [("create", theirs)]
    assert listed(root, reservation__id__exact=dropped) == [("cancel", dropped), ("create", dropped)]
    assert listed(root, created_from="2030-01-08", created_to="2030-01-08") == [("cancel", dropped)]
    assert listed(root, created_to="2030-01-07") == [("create", kept), ("create", dropped), ("create", theirs)]
    assert listed(root, created_from="2030-01-09") == []


def test_the_date_range_is_read_in_the_viewers_zone(root, log):
    # The cancellation at 09:00 UTC on the 8th is 20:00 on the 8th in Sydney; the bookings at 09:17
    # UTC on the 7th are 20:17 on the 7th there.
    root.cookies["tz"] = "Australia/Sydney"
    assert [a for a, _ in listed(root, created_from="2030-01-08")] == ["cancel"]


def test_a_bad_date_shows_the_list_unfiltered_with_the_admins_error_flag(root, log):
    response = root.get(LIST, {"created_from": "yesterday"})

    assert response.status_code == 302 and response["Location"].endswith("?e=1")


@pytest.mark.parametrize("query", [
    {"created_from": "garbage"}, {"created_to": "9999-12-31"}, {"reservation__id__exact": "abc"},
])
def test_an_export_with_a_bad_filter_sends_back_to_the_list_with_the_error_flag(root, log, query):
    # As the list itself does: an export of something other than what was asked is worse than none.
    response = root.get(EXPORT, query)

    assert response.status_code == 302 and response["Location"] == LIST + "?e=1"
    assert root.get(response["Location"]).status_code == 200


def test_search_finds_entries_by_reason_username_and_booking_number(root, log, outsider):
    dropped, theirs = log["dropped"].pk, log["theirs"].pk

    assert listed(root, q="plans changed") == [("cancel", dropped)]
    assert listed(root, q="outsider") == [("create", theirs)]
    assert listed(root, q=str(theirs)) == [("create", theirs)]


def test_the_export_link_and_the_date_range_form_carry_the_lists_filters_and_search(root, log):
    page = root.get(LIST, {"action__exact": "cancel", "q": "plans"}).content.decode()

    assert f'href="{EXPORT}?action__exact=cancel&amp;q=plans"' in page
    assert '<input type="hidden" name="action__exact" value="cancel">' in page
    assert '<input type="hidden" name="q" value="plans">' in page
    assert '<input type="date" id="created-from" name="created_from" value="">' in page


def test_the_export_streams_a_header_and_exactly_the_filtered_rows(root, log, owner):
    response = root.get(EXPORT, {"actor__id__exact": owner.pk, "q": "plans"})

    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = exported(response)
    assert rows[0] == ["created", "actor", "action", "reservation", "team", "target", "reason", "before", "after"]
    assert len(rows) == 2
    created, actor, action, reservation, team, _, reason, before, after = rows[1]
    assert (created, actor, action, reservation, team, reason) == (
        "2030-01-08T09:00:00+00:00", "owner", "cancel", str(log["dropped"].pk), "vision", "Plans changed"
    )
    assert '"status": "confirmed"' in before and '"status": "cancelled"' in after


def test_the_export_of_many_rows_is_a_stream_not_a_list(root, log):
    AuditEntry.objects.bulk_create(
        AuditEntry(action="notice", target=f"gpu:{i}", reason=f"bulk {i}") for i in range(3000)
    )

    response = root.get(EXPORT, {"action__exact": "notice"})

    assert response.streaming
    # Rows are produced as the response is read (a generator over a chunked database iterator),
    # not formatted up front.
    assert isinstance(response._iterator, types.GeneratorType)
    first = next(response.streaming_content)
    assert first.startswith(b"created,actor,action")
    rest = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rest) == 3000
    assert {row[6] for row in rest} == {f"bulk {i}" for i in range(3000)}


def test_a_cell_that_looks_like_a_spreadsheet_formula_is_exported_as_text(root):
    AuditEntry.objects.create(action="update", target="team:1", reason="=HYPERLINK(\"http://x\")")

    rows = exported(root.get(EXPORT, {"q": "HYPERLINK"}))

    assert rows[1][6] == "'=HYPERLINK(\"http://x\")"


def test_people_who_are_not_staff_get_neither_the_list_nor_the_export(log, owner):
    client = Client()
    client.force_login(owner)

    for url in (LIST, EXPORT):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_without_the_view_permission_get_no_export(log):
    client = Client()
    client.force_login(make_user("helpdesk", is_staff=True))

    assert client.get(EXPORT).status_code == 403
    assert client.get(LIST).status_code == 403


def test_staff_with_the_view_permission_may_export(log):
    user = make_user("auditor", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    client = Client()
    client.force_login(user)

    assert len(exported(client.get(EXPORT))) == 1 + AuditEntry.objects.count()


def test_the_log_stays_read_only_even_for_superusers(root, log):
    entry = AuditEntry.objects.filter(reservation__isnull=False).first()

    assert root.get(f"{LIST}add/").status_code == 403
    assert root.post(f"{LIST}{entry.pk}/change/", {"reason": "edited"}).status_code == 403
    assert root.post(f"{LIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).reason == entry.reason


def audit_list_statements(client):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(LIST).status_code == 200
    return [q["sql"] for q in captured]


def test_the_list_reads_a_page_of_the_log_never_all_of_it(root, log, owner):
    """No DISTINCT over the log (date_hierarchy, an actor filter of everyone who ever acted), no
    second count: no more statements with 300 more entries."""
    few = audit_list_statements(root)
    AuditEntry.objects.bulk_create(
        AuditEntry(action="notice", actor=owner, reason=f"entry {i}", created=at(7, 12)) for i in range(300)
    )
    many = audit_list_statements(root)

    assert len(many) <= len(few)
    on_log = [sql for sql in many if 'FROM "reservations_auditentry"' in sql]
    assert not [sql for sql in on_log if "DISTINCT" in sql]
    assert len([sql for sql in on_log if "COUNT(" in sql]) <= 1
    # Staff are offered as actors; anyone else is found by the search.
    page = root.get(LIST).content.decode()
    assert "?actor__id__exact=" in page and f"?actor__id__exact={owner.pk}" not in page


@pytest.mark.postgres
def test_a_long_log_is_counted_by_the_estimate_never_by_counting_it(root, log, owner, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", 100)
    AuditEntry.objects.bulk_create(
        AuditEntry(action="notice", actor=owner, reason=f"entry {i}", created=at(7, 12)) for i in range(1000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reservations_auditentry")

    statements = audit_list_statements(root)
    response = root.get(LIST)

    assert not [sql for sql in statements if "COUNT(" in sql and 'FROM "reservations_auditentry"' in sql]
    assert 900 < response.context["cl"].result_count < 1100  # the planner's estimate of the 1,000-odd
    assert len(response.context["cl"].result_list) == 100  # a page
