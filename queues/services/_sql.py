"""Small helpers for the few statements the ORM cannot say (UPDATE/DELETE ... RETURNING).

Both SQLite (3.35+) and PostgreSQL run every statement here unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence

from django.db import connection
from django.utils.dateparse import parse_datetime

from queues.models import Message, Queue

MESSAGE = Message._meta.db_table
QUEUE = Queue._meta.db_table


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


def fetch(sql: str, params: Iterable | Mapping = ()) -> list[dict]:
    """Run one statement (positional %s or named %(name)s parameters) and return its rows as dicts."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params if isinstance(params, Mapping) else list(params))
        if cursor.description is None:
            return []
        names = [col[0] for col in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
