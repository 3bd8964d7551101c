"""Years of audit log on PostgreSQL: partitioned by month of `created` (migration 0017), the coming
months' partitions made by beat's daily task (services.audit_partitions_ensure), a default partition
for any month without one, and the append-only trigger on every partition, whenever it was made.

Partitions made in a test's transaction go with its rollback; the tests that commit (two beats at
once, in threads) use months of their own and drop what they made."""

import logging
from datetime import date, datetime, timezone as dt_timezone

import psycopg
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from reservations import services, tasks
from reservations.models import AuditEntry

from ..support import at_once, book, page_client, text_of

LOG = "reservations_auditentry"
DEFAULT = "reservations_auditentry_default"


def utc(year, month, day=1, hour=0):
    return datetime(year, month, day, hour, tzinfo=dt_timezone.utc)


def partitions():
    """The log's partitions: {name: its bounds as PostgreSQL writes them}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [LOG],
        )
        return dict(cursor.fetchall())


def partition_of(entry):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {LOG} WHERE id = %s", [entry.pk])
        return cursor.fetchone()[0]


def entry_at(when, **fields):
    return AuditEntry.objects.create(action=AuditEntry.Action.NOTICE, created=when, **fields)


def drop_partitions(*names):
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.postgres
class TestPartitionedLog:
    pytestmark = pytest.mark.django_db

    def test_the_log_is_partitioned_by_range_of_created_with_a_default_partition(self):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT p.partstrat, a.attname FROM pg_partitioned_table p "
                "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
                "WHERE p.partrelid = %s::regclass",
                [LOG],
            )
            assert cursor.fetchone() == ("r", "created")
        assert partitions()[DEFAULT] == "DEFAULT"

    def test_the_migration_made_its_month_and_the_next_three(self):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (applied AT TIME ZONE 'UTC')::date FROM django_migrations "
                "WHERE app = 'reservations' AND name = '0017_audit_partitions'"
            )
            today = cursor.fetchone()[0]
        months = [(today.year + (today.month - 1 + i) // 12, (today.month - 1 + i) % 12 + 1) for i in range(4)]

        assert {f"{LOG}_{y}_{m:02}" for y, m in months} <= set(partitions())

    def test_django_names_the_logs_indexes_as_the_migration_made_them(self):
        # Later migrations (an index dropped, a field altered) find indexes by Django's names.
        with connection.schema_editor() as editor:
            declared = {str(statement.parts["name"]).strip('"') for statement in editor._model_indexes_sql(AuditEntry)}
        with connection.cursor() as cursor:
            made = set(connection.introspection.get_constraints(cursor, LOG))

        assert declared and declared <= made
        assert made - declared == {
            f"{LOG}_pkey", f"{LOG}_actor_id_507cbdc5_fk_auth_user_id", "reservations_auditen_reservation_id_a7a45d6a_fk_reservati",
        }

    def test_a_later_migration_can_alter_an_indexed_field(self):
        old = AuditEntry._meta.get_field("target")
        new = old.clone()
        new.set_attributes_from_name("target")
        new.db_index = False
        new.model = AuditEntry

        with connection.schema_editor() as editor:
            editor.alter_field(AuditEntry, old, new)
        with connection.cursor() as cursor:
            indexed = {tuple(c["columns"]) for c in connection.introspection.get_constraints(cursor, LOG).values() if c["index"]}
        assert ("target",) not in indexed and ("created",) in indexed  # the test's rollback restores it

    def test_entries_land_in_their_months_partition_and_read_back_as_one_log(self, frozen, cluster, owner, admin_client):
        services.audit_partitions_ensure(months_ahead=1, today=date(2030, 1, 7))
        booking = book(owner, cluster["node1"][:1], title="long history")  # January 2030, frozen
        february = entry_at(utc(2030, 2, 3), reservation=booking, reason="in February")
        later = entry_at(utc(2031, 6, 1), reservation=booking, reason="past every partition")
        created = booking.audit_entries.get(action=AuditEntry.Action.CREATE)

        assert [partition_of(e) for e in (created, february, later)] == [f"{LOG}_2030_01", f"{LOG}_2030_02", DEFAULT]
        assert list(booking.audit_entries.values_list("pk", flat=True)) == [later.pk, february.pk, created.pk]
        page = text_of(page_client(owner).get(f"/bookings/{booking.pk}/"))  # the booking's history
        assert "in February" in page and "past every partition" in page
        response = admin_client.get("/admin/reservations/auditentry/", {"reservation__id__exact": booking.pk})
        assert [e.pk for e in response.context["cl"].result_list] == [later.pk, february.pk, created.pk]

    @pytest.mark.parametrize("table", ["log", "made_by_the_migration", "made_by_beat", "default"])
    def test_update_and_delete_are_refused_on_every_partition_and_the_log(self, table):
        services.audit_partitions_ensure(months_ahead=0, today=date(2030, 1, 7))
        oldest = min(name for name in partitions() if name != DEFAULT)  # the migration made it
        year, month = (int(part) for part in oldest.rsplit("_", 2)[1:])
        entries = [entry_at(utc(year, month, 2)), entry_at(utc(2030, 1, 2)), entry_at(utc(2035, 1, 2))]
        name = {"log": LOG, "made_by_the_migration": oldest, "made_by_beat": f"{LOG}_2030_01", "default": DEFAULT}[table]

        for statement in (f"UPDATE {name} SET reason = 'rewritten'", f"DELETE FROM {name}"):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement)
        assert sorted(AuditEntry.objects.filter(reason="").values_list("pk", flat=True)) == sorted(e.pk for e in entries)

    def test_ensuring_the_partitions_again_changes_nothing(self):
        first = services.audit_partitions_ensure(months_ahead=2, today=date(2030, 11, 20))
        made = partitions()
        again = services.audit_partitions_ensure(months_ahead=2, today=date(2030, 11, 20))

        assert first == {"2030-11": "created", "2030-12": "created", "2031-01": "created"}
        assert again == {"2030-11": "exists", "2030-12": "exists", "2031-01": "exists"}
        assert partitions() == made
        assert made[f"{LOG}_2030_12"] == "FOR VALUES FROM ('2030-12-01 00:00:00+00') TO ('2031-01-01 00:00:00+00')"

    def test_a_month_with_entries_in_the_default_partition_is_skipped_with_a_warning(self, caplog):
        early = entry_at(utc(2036, 6, 15))  # no partition for June 2036 yet: the default one takes it

        with caplog.at_level(logging.WARNING, logger="reservations.services.audit"):
            outcomes = services.audit_partitions_ensure(months_ahead=2, today=date(2036, 5, 31))

        assert outcomes == {"2036-05": "created", "2036-06": "default_has_rows", "2036-07": "created"}
        assert "2036-06 has entries in the default partition" in caplog.text
        assert partition_of(early) == DEFAULT
        assert partition_of(entry_at(utc(2036, 6, 16))) == DEFAULT  # the month still takes entries

    def test_a_log_locked_past_the_timeout_is_left_for_the_next_run(self, caplog):
        # Another session holds the lock the function takes (as a beat making a partition would).
        db = connection.settings_dict
        with psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"],
                             password=db["PASSWORD"] or None, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(hashtext('reservations_audit_partition_add'))")
            with caplog.at_level(logging.WARNING, logger="reservations.services.audit"):
                outcomes = services.audit_partitions_ensure(months_ahead=0, today=date(2037, 3, 1))

        assert outcomes == {"2037-03": "busy"}
        assert f"{LOG}_2037_03" not in partitions()
        assert "tried again tomorrow" in caplog.text

    def test_the_daily_task_keeps_the_configured_months_ahead(self, settings, frozen):
        settings.AUDIT_PARTITION_MONTHS_AHEAD = 5

        tasks.audit_partitions()

        assert {f"{LOG}_2030_{m:02}" for m in range(1, 7)} <= set(partitions())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_beats_making_the_same_months_at_once_make_each_once():
    months = [f"{LOG}_2040_{m:02}" for m in (1, 2, 3)]
    try:
        runs = at_once([lambda: services.audit_partitions_ensure(months_ahead=2, today=date(2040, 1, 1))] * 2)

        for month in ("2040-01", "2040-02", "2040-03"):
            assert sorted(run[month] for run in runs) == ["created", "exists"]
        assert set(months) <= set(partitions())
    finally:
        drop_partitions(*months)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_test_databases_flush_empties_every_partition():
    # TransactionTestCase's teardown and `manage.py flush` TRUNCATE the log: no row trigger fires.
    this_month = entry_at(datetime.now(dt_timezone.utc))  # the migration made its partition
    past_every_partition = entry_at(utc(2035, 1, 1))
    assert partition_of(this_month) != partition_of(past_every_partition) == DEFAULT

    call_command("flush", interactive=False, verbosity=0)

    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_sqlite_keeps_its_log_in_one_table():
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite lane's behaviour")

    assert services.audit_partitions_ensure(months_ahead=3) == {}
    assert tasks.audit_partitions() == {}
