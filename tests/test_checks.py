"""System checks that read the database (queues.checks): `migrate`, `serve` and `bench` show them."""

from __future__ import annotations

import pytest
from django.core.checks import Tags, run_checks
from django.db import connection

from queues.models import Message
from tests.conftest import requires_postgres


def _database_warnings() -> list[str]:
    return [m.msg for m in run_checks(databases=["default"], tags=[Tags.database]) if m.id == "queues.W001"]


@requires_postgres
@pytest.mark.django_db
def test_autovacuum_check__warns_exactly_when_the_postgresql_server_does_not_vacuum():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on'")
        [vacuums] = cursor.fetchone()
    # This project's CI server runs with autovacuum off, so there the warning must be given.
    server_warnings = [msg for msg in _database_warnings() if "on the PostgreSQL server" in msg]
    assert len(server_warnings) == (0 if vacuums else 1), server_warnings


@requires_postgres
@pytest.mark.django_db
def test_autovacuum_check__warns_when_the_message_table_opts_out():
    table = Message._meta.db_table
    assert not [msg for msg in _database_warnings() if table in msg]
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    assert [msg for msg in _database_warnings() if table in msg] == [
        f"autovacuum is turned off for the message table {table} of database 'default'."
    ]


@pytest.mark.django_db
def test_autovacuum_check__says_nothing_on_sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: it has no vacuum to warn about")
    assert _database_warnings() == []


def test_autovacuum_check__reads_no_database_unless_asked():
    # `manage.py check` without --database, and every command's own checks, name no database.
    assert "queues.W001" not in [m.id for m in run_checks(tags=[Tags.database])]
