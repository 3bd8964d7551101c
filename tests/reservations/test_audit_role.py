"""The app's database role (manage.py create_app_role): it can book and append to the audit log, and
can neither change the log nor switch off the trigger that guards it. Against the real PostgreSQL
test database, connected as that role."""

import io
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from psycopg import errors, sql

from reservations.models import AuditEntry, Reservation

# The role must see what the owner committed, and the command's grants must be committed too.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

APPEND = (
    "INSERT INTO reservations_auditentry (created, action, target, reason) "
    "VALUES (now(), 'notice', 'role-test', '') RETURNING id"
)


@pytest.fixture
def app_role():
    """A fresh role (roles are cluster-wide: a unique name), dropped with its grants afterwards."""
    name = f"app_test_{uuid.uuid4().hex[:12]}"
    call_command("create_app_role", name, stdout=io.StringIO())
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            for statement in ("DROP OWNED BY {}", "DROP ROLE {}"):
                cursor.execute(sql.SQL(statement).format(sql.Identifier(name)).as_string(connection.connection))


def connect_as(role):
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=role, autocommit=True)


@pytest.fixture
def as_app(app_role):
    with connect_as(app_role) as conn:
        yield conn


@pytest.fixture
def entry_id():
    with connection.cursor() as cursor:
        cursor.execute(APPEND)
        return cursor.fetchone()[0]


def test_the_app_role_can_read_and_append_to_the_audit_log(as_app, entry_id):
    new_id = as_app.execute(APPEND).fetchone()[0]

    assert as_app.execute("SELECT count(*) FROM reservations_auditentry WHERE target = 'role-test'").fetchone() == (2,)
    assert AuditEntry.objects.filter(pk=new_id).exists()


@pytest.mark.parametrize("statement", [
    "UPDATE reservations_auditentry SET reason = 'rewritten'",
    "DELETE FROM reservations_auditentry",
    "TRUNCATE reservations_auditentry",
    "ALTER TABLE reservations_auditentry DISABLE TRIGGER ALL",
    "ALTER TABLE reservations_auditentry DISABLE TRIGGER audit_append_only",
])
def test_the_app_role_can_neither_change_the_audit_log_nor_disable_its_trigger(as_app, entry_id, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        as_app.execute(statement)

    assert AuditEntry.objects.filter(pk=entry_id, reason="").exists()
    assert trigger_states() == {"O"}


def trigger_states():
    """How the append-only trigger stands on the log and each of its partitions ("O": it fires)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_append_only'")
        return {state for (state,) in cursor.fetchall()}


def partition_holding(entry_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM reservations_auditentry WHERE id = %s", [entry_id])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("statement", [
    "UPDATE {} SET reason = 'rewritten'",
    "DELETE FROM {}",
    "TRUNCATE {}",
    "ALTER TABLE {} DISABLE TRIGGER ALL",
    "ALTER TABLE {} DISABLE TRIGGER audit_append_only",
])
@pytest.mark.parametrize("partition", ["of the entry", "default"])
def test_the_app_role_can_change_no_partition_of_the_log_either(as_app, entry_id, statement, partition):
    name = partition_holding(entry_id) if partition == "of the entry" else "reservations_auditentry_default"

    with pytest.raises(errors.InsufficientPrivilege):
        as_app.execute(sql.SQL(statement).format(sql.Identifier(name)))

    assert AuditEntry.objects.filter(pk=entry_id, reason="").exists()
    assert trigger_states() == {"O"}


def test_the_app_role_adds_a_month_whose_partition_it_can_only_append_to(as_app):
    # Beat runs as the app role: the function makes the partition as the tables' owner.
    name = "reservations_auditentry_2041_05"
    try:
        assert as_app.execute("SELECT reservations_audit_partition_add('2041-05-09')").fetchone() == ("created",)
        new_id = as_app.execute(APPEND.replace("now()", "'2041-05-10T12:00:00Z'")).fetchone()[0]
        assert partition_holding(new_id) == name
        # What the owner's default privileges gave the role on a new table, less all but reading and
        # appending (the trigger would refuse an UPDATE anyway: this is the layer beneath it).
        privileges = as_app.execute(
            "SELECT p, has_table_privilege(%s, p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p",
            [name],
        ).fetchall()
        assert dict(privileges) == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}
        for statement in ("UPDATE {} SET reason = 'rewritten'", "DELETE FROM {}", "TRUNCATE {}",
                          "ALTER TABLE {} DISABLE TRIGGER audit_append_only"):
            with pytest.raises(errors.InsufficientPrivilege):
                as_app.execute(sql.SQL(statement).format(sql.Identifier(name)))
        assert AuditEntry.objects.filter(pk=new_id, reason="").exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.slow
def test_the_app_connected_as_its_role_books(app_role, owner, cluster):
    db = connection.settings_dict
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from reservations import services\n"
        "user = get_user_model().objects.get(username='owner')\n"
        "print(services.reservation_create(user=user, gpu_count=1, start='earliest', slots=1).pk)\n"
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=settings.BASE_DIR, capture_output=True, text=True,
        env=dict(os.environ, DATABASE_URL=f"postgres://{app_role}@{db['HOST']}:{db['PORT']}/{db['NAME']}"),
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    reservation = Reservation.objects.get(pk=int(result.stdout.split()[-1]))
    assert reservation.user == owner
    assert reservation.audit_entries.filter(action=AuditEntry.Action.CREATE).exists()


def test_the_role_running_the_command_cannot_be_the_app_role():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        owner = cursor.fetchone()[0]

    with pytest.raises(CommandError, match="owns the tables"):
        call_command("create_app_role", owner, stdout=io.StringIO())


def test_a_role_that_owns_a_table_is_refused(app_role):
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER TABLE reservations_notice OWNER TO {}").format(
            sql.Identifier(app_role)).as_string(connection.connection))
    try:
        with pytest.raises(CommandError, match="reservations_notice"):
            call_command("create_app_role", app_role, stdout=io.StringIO())
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reservations_notice OWNER TO CURRENT_USER")
