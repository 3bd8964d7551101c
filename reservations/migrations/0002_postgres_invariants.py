"""What PostgreSQL enforces by itself, whatever code writes to it.

- No two live allocations overlap on one GPU (exclusion constraint over gpu and [start, end)).
- The audit log is append-only: UPDATE and DELETE on it raise. (TRUNCATE, an operator's tool and
  what test teardown uses, is not a row operation and stays possible.)

SQLite, the embedded default, has neither; there the service's serialised check-then-insert holds.
"""

from django.contrib.postgres.operations import BtreeGistExtension
from django.db import migrations

from reservations.dbops import PostgresOnlySQL


class Migration(migrations.Migration):
    dependencies = [("reservations", "0001_initial")]

    operations = [
        BtreeGistExtension(),
        PostgresOnlySQL(
            sql="""
                ALTER TABLE reservations_allocation ADD CONSTRAINT allocation_no_overlap
                EXCLUDE USING gist (gpu_id WITH =, tstzrange("start", "end", '[)') WITH &&)
                WHERE (live);
            """,
            reverse_sql="ALTER TABLE reservations_allocation DROP CONSTRAINT allocation_no_overlap;",
        ),
        PostgresOnlySQL(
            sql="""
                CREATE FUNCTION reservations_audit_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
                        USING ERRCODE = 'insufficient_privilege';
                END
                $$ LANGUAGE plpgsql;
                CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON reservations_auditentry
                FOR EACH ROW EXECUTE FUNCTION reservations_audit_append_only();
            """,
            reverse_sql="""
                DROP TRIGGER audit_append_only ON reservations_auditentry;
                DROP FUNCTION reservations_audit_append_only();
            """,
        ),
    ]
