"""Small helpers for the few statements the ORM cannot say (UPDATE/DELETE ... RETURNING).

Both SQLite (3.35+) and PostgreSQL run every statement here unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence

from django.db import connection
from django.utils.dateparse import parse_datetime

from queues.conf import app_settings
from queues.models import Delivery, Message, Queue

try:
    import psycopg
except ImportError:  # SQLite-only installs
    psycopg = None

MESSAGE = Message._meta.db_table
QUEUE = Queue._meta.db_table
DELIVERY = Delivery._meta.db_table


def db_dt(value: dt.datetime | None):
    """A datetime as the backend stores it (SQLite keeps naive UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)


def py_dt(value) -> dt.datetime | None:
    """A datetime read back from a raw statement, always aware UTC."""
    if value is None or (isinstance(value, dt.datetime) and value.tzinfo is not None):
        return value
    if isinstance(value, str):
        value = parse_datetime(value)
    return value.replace(tzinfo=dt.UTC)


def py_json(value):
    """A JSON column read back from a raw statement (Django loads jsonb as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def marks(values: Sequence) -> str:
    """'%s, %s, ...' for an IN list."""
    return ", ".join(["%s"] * len(values))


_SQLITE_LIST = 500


def any_of(column: str, values: Sequence, pg_type: str) -> tuple[str, list]:
    """`column IN (values)` and its parameters.

    On PostgreSQL the values are one array parameter, so the statement reads the same
    for any number of them: psycopg parses its text once (it parses a statement of a
    hundred placeholders on every run) and PostgreSQL can keep its plan.
    """
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::{pg_type}[])", [list(values)]
    values = list(values)
    if len(values) > _SQLITE_LIST:
        # SQLite binds at most 32,766 parameters a statement in its default build (some builds
        # 999): a longer list goes as one JSON array. A short one stays a list SQLite plans best.
        return f"{column} IN (SELECT value FROM json_each(%s))", [json.dumps(values)]
    return f"{column} IN ({marks(values)})", values


if psycopg is not None:

    class _FreshPlanCursor(psycopg.Cursor):
        """Binds on the server but never prepares: PostgreSQL plans each run for its own values."""

        results_binary = False

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=False, binary=self.results_binary)

    class _FreshPlanBinaryCursor(_FreshPlanCursor):
        """The same, with the rows in binary (see _BinaryCursor)."""

        results_binary = True

    class _BinaryCursor(psycopg.Cursor):
        """psycopg's binding cursor, with the rows in binary: its C loaders read them.

        Types come back as psycopg loads them, not as Django registered for text: jsonb as
        Python values (py_json takes both), timestamptz aware in the session's time zone.
        """

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=prepare, binary=True)


def _cursor(reuse_plan: bool, binary: bool = False):
    """A cursor for the statements here; on PostgreSQL one that binds parameters on the server.

    Django's psycopg cursors interpolate parameters in the client, so PostgreSQL plans
    every statement afresh; with many indexes on the message table planning costs more
    than running the statement. A server-binding cursor lets psycopg prepare a statement
    it has run a few times on a connection, and PostgreSQL reuses its plan (`reuse_plan`).

    Any other statement is run unprepared, and so planned for its own values: a generic
    plan is chosen from the statistics of its time, and cannot know how many rows a LIMIT
    asks for or how many ids an array holds. (Receive and ack, which need both, are functions
    that plan under settings leaving one plan: migrations 0006 and 0007.)
    """
    if connection.vendor == "postgresql" and app_settings.PREPARED_STATEMENTS:
        connection.ensure_connection()
        if reuse_plan:
            cursor_class = _BinaryCursor if binary else psycopg.Cursor
        else:
            cursor_class = _FreshPlanBinaryCursor if binary else _FreshPlanCursor
        # Django's wrapper (query logging, execute_wrappers) around psycopg's binding cursor.
        return connection._prepare_cursor(cursor_class(connection.connection))
    return connection.cursor()


def fetch(sql: str, params: Iterable | Mapping = (), *, reuse_plan: bool = False, binary: bool = False) -> list[dict]:
    """Run one statement (positional %s or named %(name)s parameters) and return its rows as dicts.

    `reuse_plan=True` is for statements with one possible plan whatever their values (an
    INSERT of given rows, a lookup by a unique key, a call of a function): PostgreSQL may
    then plan them once per connection. Check the generic plan first (PREPARE, then EXPLAIN
    EXECUTE with plan_cache_mode=force_generic_plan): for the ack's statement,
    `id = ANY($1) AND queue_id = $2`, it chose a scan of the queue's leases over the primary key.

    `binary=True` asks PostgreSQL for binary rows when the parameters are
    bound on the server: jsonb then comes back loaded, not as text.
    """
    with _cursor(reuse_plan, binary) as cursor:
        cursor.execute(sql, params if isinstance(params, Mapping) else list(params))
        description = cursor.description  # psycopg builds it anew on each access
        if description is None:
            return []
        names = [col[0] for col in description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
