"""The PostgreSQL role the app connects as, separate from the role that owns the tables.

The audit log's append-only trigger (migration 0002) binds only a role that cannot switch it off,
and the owner of a table (or a superuser, or a member of the owner's role) can: `ALTER TABLE ...
DISABLE TRIGGER`, or TRUNCATE. So the owner runs the migrations and this command, and the web app,
workers and beat connect as the role it makes: it reads and writes every table, but on the audit
log it may only read and append, and it owns nothing. README, "A database role for the app".

The audit log's partitions (migration 0017) are tables of their own: the role gets the log's
privileges on them, and EXECUTE on the function that adds the coming months' partitions (beat calls
it; the function runs as the owner, who alone may add a partition).
"""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from psycopg import sql

from reservations.models import AuditEntry

READ_WRITE = sql.SQL("SELECT, INSERT, UPDATE, DELETE")
# Tables the app reads and appends to but never changes: the audit log, and the migration record
# (only the owner migrates).
APPEND_ONLY = {AuditEntry._meta.db_table: sql.SQL("SELECT, INSERT"), "django_migrations": sql.SQL("SELECT")}
PARTITION_ADD = "reservations_audit_partition_add(date)"


class Command(BaseCommand):
    help = (
        "Create or update the PostgreSQL role the app connects as (run it as the role that owns the "
        "tables, after migrate): read and write on every table, only SELECT and INSERT on the audit "
        "log, owning nothing, and the same on tables later migrations create."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The app's role, e.g. scheduler_app.")
        parser.add_argument(
            "--password-stdin", action="store_true",
            help="Set the role's password from the first line of standard input (not on the command line, "
                 "where other users could read it).",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args, name, password_stdin, database, **options):
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError("Only PostgreSQL has roles (and the audit trigger); nothing to do here.")
        password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
        if password_stdin and not password:
            raise CommandError("--password-stdin: standard input has no password.")

        with transaction.atomic(using=database), connection.cursor() as cursor:
            def run(statement):
                cursor.execute(statement.as_string(connection.connection))

            cursor.execute("SELECT current_user, current_database(), current_schema()")
            owner, database_name, schema = cursor.fetchone()
            if name == owner:
                raise CommandError(f"{name} is the role running this, which owns the tables: name another role.")
            tables = connection.introspection.table_names(cursor)
            partitions = self._audit_partitions(cursor)
            # The owner of a partition could disable the trigger's clone on it.
            self._refuse_a_role_that_could_disable_the_trigger(cursor, name, tables + partitions)

            role = sql.Identifier(name)
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
            if cursor.fetchone() is None:
                run(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            if password:
                run(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
            run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database_name), role))
            run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
            for table in tables:
                # REVOKE first: running the command again also takes back what an earlier grant
                # (or a default privilege) gave beyond this list.
                run(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(table), role))
                privileges = APPEND_ONLY.get(table, READ_WRITE)
                run(sql.SQL("GRANT {} ON TABLE {} TO {}").format(privileges, sql.Identifier(table), role))
            for partition in partitions:
                run(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(partition), role))
                run(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    APPEND_ONLY[AuditEntry._meta.db_table], sql.Identifier(partition), role))
            run(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(PARTITION_ADD), role))
            run(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(sql.Identifier(schema), role))
            # Tables and sequences that the owner's later migrations create.
            run(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
                sql.Identifier(schema), READ_WRITE, role))
            run(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
                sql.Identifier(schema), role))

        self.stdout.write(
            f"Role {name} may use {len(tables)} tables of {database_name} owned by {owner} "
            f"(read and append only on {AuditEntry._meta.db_table} and its {len(partitions)} partitions). "
            f"Connect the app as {name}; migrate as {owner}."
        )

    @staticmethod
    def _audit_partitions(cursor):
        """The audit log's partitions, which Django's list of tables leaves out."""
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            [AuditEntry._meta.db_table],
        )
        return [name for (name,) in cursor.fetchall()]

    @staticmethod
    def _refuse_a_role_that_could_disable_the_trigger(cursor, name, tables):
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [name])
        row = cursor.fetchone()
        if row is None:
            return
        if row[0]:
            raise CommandError(f"{name} is a superuser, which no trigger binds: use a plain role.")
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') "
            "AND pg_table_is_visible(c.oid) AND pg_has_role(%s, c.relowner, 'MEMBER') ORDER BY 1",
            [tables, name],
        )
        owned = [table for (table,) in cursor.fetchall()]
        if owned:
            raise CommandError(
                f"{name} owns (or inherits the owner of) {', '.join(owned[:5])}: it could disable the audit "
                "trigger. Use a role that owns no tables."
            )
