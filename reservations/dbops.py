"""Migration operations for what each database enforces in its own way: PostgreSQL's exclusion
constraint and audit trigger (0002), SQLite's triggers for the same rule on allocations (0014)."""

from django.db import migrations


class VendorSQL(migrations.RunSQL):
    """SQL run on one database vendor only (`vendor`, as Django's connection.vendor names it)."""

    vendor = None

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == self.vendor:
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == self.vendor:
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class PostgresOnlySQL(VendorSQL):
    vendor = "postgresql"


class SQLiteOnlySQL(VendorSQL):
    vendor = "sqlite"
