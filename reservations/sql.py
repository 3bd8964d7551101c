"""SQL expressions that mean the same on both supported databases: PostgreSQL, and SQLite (the quick
start's embedded default). Django leaves these two out of its portable set: the seconds in a duration
(PostgreSQL's EXTRACT(epoch ...) has no SQLite form, where Django keeps durations as microseconds) and
a median (PostgreSQL's percentile_cont; SQLite has no such aggregate, so `register_sqlite_functions`
gives each SQLite connection one)."""

import statistics

from django.db.models import Aggregate, FloatField, Func


class EpochSeconds(Func):
    """A duration in seconds, as a float."""

    output_field = FloatField()

    def as_postgresql(self, compiler, connection, **extra_context):
        # EXTRACT gives a numeric: a float like SQLite's, so both sum and round alike.
        return self.as_sql(compiler, connection, template="EXTRACT(epoch FROM %(expressions)s)::double precision")

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="(%(expressions)s) / 1000000.0")


class Median(Aggregate):
    """The median of the values (of two middle values, their mean), as a float; NULL over no rows."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # On a copy: Aggregate.as_sql takes the template from the expression when it adds FILTER.
        median = self.copy()
        median.function, median.template = _SQLITE_MEDIAN, "%(function)s(%(expressions)s)"
        return median.as_sql(compiler, connection, **extra_context)


_SQLITE_MEDIAN = "django_app_median"


class _SQLiteMedian:
    """The aggregate SQLite calls for Median: step() per row, finalize() at the end."""

    def __init__(self):
        self.values = []

    def step(self, value):
        if value is not None:
            self.values.append(value)

    def finalize(self):
        return statistics.median(self.values) if self.values else None


def register_sqlite_functions(sender, connection, **kwargs):
    """connection_created receiver: the functions above on each new SQLite connection."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate(_SQLITE_MEDIAN, 1, _SQLiteMedian)
