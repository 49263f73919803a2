"""System checks that read the database. `manage.py migrate` runs them, and so does
`check --database default`; `serve` (after it migrates) and `bench` call them themselves, since
a migrate they run from code skips checks. Plain `check` names no database and skips them."""

from __future__ import annotations

from django.core.checks import Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import connections

from queues.models import Message

_HINT = (
    "Every receive, ack and timed-out lease leaves a dead row version in the message table; without vacuum "
    "they pile up and consumers slow down until they fall behind (README, PostgreSQL). {fix}"
)

# Autovacuum needs both settings on. A table can still opt out (its autovacuum_enabled storage
# parameter, read as PostgreSQL reads a boolean).
_VACUUM_STATE = """
SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on',
       COALESCE((SELECT CAST(option_value AS boolean) FROM pg_class, pg_options_to_table(pg_class.reloptions)
                 WHERE pg_class.oid = to_regclass(%s) AND option_name = 'autovacuum_enabled'), TRUE)
"""


@register(Tags.database)
def autovacuum_on(app_configs, databases=None, **kwargs) -> list[CheckWarning]:
    """PostgreSQL must vacuum the message table: every receive, ack and timed-out lease leaves a dead row version."""
    warnings = []
    table = Message._meta.db_table
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute(_VACUUM_STATE, [table])
            server_on, table_on = cursor.fetchone()
        if not server_on:
            warnings.append(
                CheckWarning(
                    f"autovacuum is off on the PostgreSQL server of database '{alias}' (it needs autovacuum "
                    "and track_counts on).",
                    hint=_HINT.format(fix=f"Turn autovacuum on, or run VACUUM on {table} every minute or so."),
                    id="queues.W001",
                )
            )
        if not table_on:
            warnings.append(
                CheckWarning(
                    f"autovacuum is turned off for the message table {table} of database '{alias}'.",
                    hint=_HINT.format(fix=f"ALTER TABLE {table} RESET (autovacuum_enabled);"),
                    id="queues.W001",
                )
            )
    return warnings
