"""System checks that read the database: `migrate`, `serve` (after it migrates) and `bench` run them, as
does `check --database default` (plain `check` names no database and skips them)."""

from __future__ import annotations

from django.core.checks import Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import connections


@register(Tags.database)
def autovacuum_on(app_configs, databases=None, **kwargs) -> list[CheckWarning]:
    """PostgreSQL must vacuum the message table: every receive, ack and timed-out lease leaves a dead row version."""
    warnings = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('autovacuum')")
            [setting] = cursor.fetchone()
        if setting != "on":
            warnings.append(
                CheckWarning(
                    f"autovacuum is off on the PostgreSQL server of database '{alias}'.",
                    hint=(
                        "Every receive, ack and timed-out lease leaves a dead row version in the message table; "
                        "without vacuum they pile up and consumers slow down until they fall behind (README, "
                        "PostgreSQL). Turn autovacuum on, or run VACUUM on queues_message every minute or so."
                    ),
                    id="queues.W001",
                )
            )
    return warnings
