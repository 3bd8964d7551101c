"""SQL that means the same on both supported databases: PostgreSQL, and SQLite (the quick
start's embedded default). Django leaves these two out of its portable set: the seconds in a duration
(PostgreSQL's EXTRACT(epoch ...) has no SQLite form, where Django keeps durations as microseconds) and
a median (PostgreSQL's percentile_cont; SQLite has no such aggregate, so `register_sqlite_functions`
gives each SQLite connection one)."""

import statistics
from datetime import datetime, timezone as dt_timezone

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


class Vendor:
    """The same pieces for SQL written out by hand (a query on a hot path, where building it with the
    ORM costs more than running it): the smaller and larger of two values, the seconds between two
    times, and times in and out."""

    def __init__(self, connection):
        self.connection = connection
        self.sqlite = connection.vendor == "sqlite"
        self.q = connection.ops.quote_name

    def least(self, a, b):
        return f"MIN({a}, {b})" if self.sqlite else f"LEAST({a}, {b})"

    def greatest(self, a, b):
        return f"MAX({a}, {b})" if self.sqlite else f"GREATEST({a}, {b})"

    def seconds(self, later, earlier):
        """Seconds from `earlier` to `later`, a float. SQLite keeps times as text: julianday's days,
        rounded to the millisecond (a double's last digits would otherwise show in a sum of hours)."""
        if self.sqlite:
            return f"ROUND((julianday({later}) - julianday({earlier})) * 86400.0, 3)"
        return f"EXTRACT(epoch FROM ({later}) - ({earlier}))::double precision"

    def param(self, value):
        return self.connection.ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value

    def moment(self, value):
        """A time read back: SQLite gives its text (UTC, as Django writes it)."""
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=dt_timezone.utc)
        return value
