"""With history behind it, no page, list, export or scrape reads the history: every query each of
them makes is run under EXPLAIN ANALYZE by PostgreSQL (after ANALYZE, with months of bookings,
allocations, audit entries in their month's partitions, notices and jobs before the windows read),
and none takes more than a page's worth of rows from one of those tables, whether by a sequential
scan or an index. Behaviour (rows read), not timing: bench/history.py measures the time."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reservations.admin import EstimatedCountPaginator
from reservations.models import Allocation, AuditEntry, Notice, Reservation
from trainer.models import TrainingJob

from .support import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
HISTORY = 4000
PEOPLE = 16
# Rows a read may take from one history table: a page (50, 100), a person's own count (4000 / 16),
# or a page of a person's notices read from everyone's newest (PostgreSQL's choice: the created index
# in order, the others' skipped, about 16 x 51 here), never the history (three months before the
# window: 4,000 bookings and notices, 12,000 audit entries).
READ_LIMIT = 1000
HISTORY_TABLES = {
    "reservations_reservation", "reservations_allocation", "reservations_auditentry", "reservations_notice",
    "trainer_trainingjob",
}


@pytest.fixture
def history(cluster, team):
    """A team's history on one node: HISTORY bookings of two hours by PEOPLE people, 45 days before now
    and earlier, each with a finished job, a read notice and three audit entries (thousands in each
    month's partition of the log); and the veteran's booking running now."""
    people = [make_user(f"person{p}", team) for p in range(PEOPLE)]
    user = people[0]
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    gpus = cluster["node1"]
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    # Back to back on each of the node's four GPUs: a booking starts every half hour, for three months.
    first = now - timedelta(days=45) - timedelta(minutes=30 * HISTORY)
    bookings = Reservation.objects.bulk_create(
        Reservation(user=people[i % PEOPLE], team=team, title=f"run {i}", start=first + timedelta(minutes=30 * i),
                    end=first + timedelta(minutes=30 * i + 120), created=first + timedelta(minutes=30 * i - 1440),
                    status=Reservation.Status.COMPLETED, gpu_count=1)
        for i in range(HISTORY)
    )
    Allocation.objects.bulk_create(
        Allocation(reservation=r, gpu=gpus[i % 4], start=r.start, end=r.end) for i, r in enumerate(bookings)
    )
    TrainingJob.objects.bulk_create(
        TrainingJob(reservation=r, spec={}, epochs=1, status=TrainingJob.Status.COMPLETED, started_at=r.start,
                    ended_at=r.end, checkpoint="/runs/x/weights/epoch0.pt", created=r.created)
        for r in bookings
    )
    Notice.objects.bulk_create(
        Notice(user=r.user, kind=Notice.Kind.SLOT_ENDING, reservation=r, message="old", created=r.start, read_at=r.end)
        for r in bookings
    )
    with connection.cursor() as cursor:  # each month of the log its partition, as beat makes them
        cursor.execute(
            "SELECT reservations_audit_partition_add(month::date) FROM generate_series("
            "date_trunc('month', %s::timestamptz AT TIME ZONE 'UTC'), %s::timestamptz, interval '1 month') AS month",
            [first - timedelta(days=1), now],
        )
    AuditEntry.objects.bulk_create(
        AuditEntry(created=r.created + timedelta(minutes=k), actor=r.user if k == 0 else None, reservation=r,
                   action=action, reason="history")
        for i, r in enumerate(bookings)
        for k, action in enumerate(["create", "activate", ("complete", "cancel", "release")[i % 3]])
    )
    current = Reservation.objects.create(user=user, team=team, title="now", start=now - timedelta(hours=1),
                                         end=now + timedelta(hours=1), status=Reservation.Status.ACTIVE, gpu_count=1)
    Allocation.objects.create(reservation=current, gpu=gpus[0], start=current.start, end=current.end)
    AuditEntry.objects.create(actor=user, reservation=current, action="create", reason="now")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"user": user, "staff": staff, "booking": current, "now": now}


def reads(history):
    """(who, path, query) of every page, list, export and scrape that a user or monitor reaches."""
    now = history["now"]
    week = {"start": (now - timedelta(days=3)).isoformat(), "end": (now + timedelta(days=4)).isoformat()}
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    return {
        "calendar page": ("user", "/", {}),
        "calendar feed": ("user", "/calendar/events/", week),
        "my bookings": ("user", "/bookings/", {}),
        "a booking's page": ("user", f"/bookings/{history['booking'].pk}/", {}),
        "notices page": ("user", "/notices/", {}),
        "reservations API, a user's": ("user", "/api/v1/reservations/", {"user": "person0"}),
        "notices API": ("user", "/api/v1/notices/", {}),
        "availability API": ("user", "/api/v1/availability/", {"gpu_count": 2}),
        "audit API": ("staff", "/api/v1/audit/", {}),
        "usage report API": ("staff", "/api/v1/reports/usage/", {}),
        "usage report page": ("staff", "/reports/usage/", {}),
        "admin audit list": ("staff", "/admin/reservations/auditentry/", {}),
        "admin audit CSV, one day": ("staff", "/admin/reservations/auditentry/export.csv",
                                     {"created_from": yesterday, "created_to": yesterday}),
        "admin bookings list": ("staff", "/admin/reservations/reservation/", {}),
        "admin notices list": ("staff", "/admin/reservations/notice/", {}),
        "metrics scrape": ("monitor", "/metrics", {}),
    }


READS = [
    "calendar page", "calendar feed", "my bookings", "a booking's page", "notices page", "reservations API, a user's",
    "notices API", "availability API", "audit API", "usage report API", "usage report page", "admin audit list",
    "admin audit CSV, one day", "admin bookings list", "admin notices list", "metrics scrape",
]


SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def history_read(sql):
    """{history table or partition: rows read} for the scans of `sql` that read more than READ_LIMIT
    rows of one (run with EXPLAIN ANALYZE: the rows each scan returned and the rows its filter threw
    away, over all its loops)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        root = cursor.fetchone()[0]
        root = json.loads(root) if isinstance(root, str) else root
        found, todo = {}, [root[0]["Plan"]]
        while todo:
            node = todo.pop()
            todo += node.get("Plans", [])
            if node["Node Type"] not in SCANS:
                continue
            cursor.execute("SELECT COALESCE(pg_partition_root(%s::regclass), %s::regclass)::text",
                           [node["Relation Name"]] * 2)
            if cursor.fetchone()[0] not in HISTORY_TABLES:
                continue
            read = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                    + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)
            if read > READ_LIMIT:
                found[node["Relation Name"]] = read
    return found


@pytest.mark.parametrize("name", READS)
def test_no_read_reads_the_history(history, name, monkeypatch):
    # The admin's lists count exactly below ESTIMATE_ABOVE rows (a small table is cheap to count);
    # here HISTORY stands for millions, so they take the estimate, as they would there.
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", HISTORY // 10)
    who, path, query = reads(history)[name]
    client = Client(REMOTE_ADDR="127.0.0.1")
    if who != "monitor":
        client.force_login(history[who])

    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, query)
        body = b"".join(response.streaming_content) if response.streaming else response.content

    assert response.status_code == 200, body[:500]
    heavy = {}
    for query in captured.captured_queries:
        sql = query["sql"]
        if sql.lstrip().upper().startswith("SELECT"):
            read = history_read(sql)
            if read:
                heavy[sql[:300]] = read
    assert heavy == {}
