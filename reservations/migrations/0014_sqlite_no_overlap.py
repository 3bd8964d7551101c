"""No two live allocations overlap on one GPU, enforced by SQLite too (the quick start's database),
as PostgreSQL's exclusion constraint does (0002): triggers refuse an inserted or changed live
allocation that overlaps another on its GPU, with the constraint's name in the error, so the booking
services read it as PostgreSQL's (locks.is_overlap_violation).

The audit log's append-only trigger stays PostgreSQL's: on SQLite, Django empties tables for tests
and `flush` with DELETE, which such a trigger would refuse (PostgreSQL's TRUNCATE is no row
operation). README says which guarantees differ.
"""

from django.db import migrations

from reservations.dbops import SQLiteOnlySQL

# Times are stored as ISO text in one format, so they compare as text in time order.
OVERLAPS = """
    NEW.live AND EXISTS (
        SELECT 1 FROM reservations_allocation other
        WHERE other.gpu_id = NEW.gpu_id AND other.live AND other.id IS NOT NEW.id
          AND other."start" < NEW."end" AND other."end" > NEW."start"
    )
"""
REFUSE = "SELECT RAISE(ABORT, 'allocation_no_overlap: two live allocations overlap on one GPU');"


class Migration(migrations.Migration):
    dependencies = [("reservations", "0013_notice_email_claim")]

    operations = [
        SQLiteOnlySQL(
            sql=[
                f"CREATE TRIGGER allocation_no_overlap_insert BEFORE INSERT ON reservations_allocation "
                f"WHEN {OVERLAPS} BEGIN {REFUSE} END;",
                f'CREATE TRIGGER allocation_no_overlap_update BEFORE UPDATE OF gpu_id, "start", "end", live '
                f"ON reservations_allocation WHEN {OVERLAPS} BEGIN {REFUSE} END;",
            ],
            reverse_sql=[
                "DROP TRIGGER allocation_no_overlap_insert;",
                "DROP TRIGGER allocation_no_overlap_update;",
            ],
        ),
    ]
