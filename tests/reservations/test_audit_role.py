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
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_append_only'")
        assert cursor.fetchone() == ("O",)


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
