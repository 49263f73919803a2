"""System checks that read the database (queues.checks): `migrate`, `serve` and `bench` show them."""

from __future__ import annotations

import os

import pytest
from django.core.checks import Tags, run_checks
from django.db import connection

from tests.conftest import requires_postgres


def _database_check_ids() -> list[str]:
    return [message.id for message in run_checks(databases=["default"], tags=[Tags.database])]


@requires_postgres
@pytest.mark.django_db
def test_autovacuum_check__warns_exactly_when_the_postgresql_server_does_not_vacuum():
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        [setting] = cursor.fetchone()
    # This project's CI server runs with autovacuum off, so there the warning must be given.
    assert ("queues.W001" in _database_check_ids()) == (setting == "off")


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="SQLite only: it has no vacuum to warn about",
)
@pytest.mark.django_db
def test_autovacuum_check__says_nothing_on_sqlite():
    assert "queues.W001" not in _database_check_ids()


def test_autovacuum_check__reads_no_database_unless_asked():
    # `manage.py check` without --database, and every command's own checks, name no database.
    assert "queues.W001" not in [m.id for m in run_checks(tags=[Tags.database])]
