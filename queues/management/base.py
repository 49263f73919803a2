"""The base of the operator commands that read and write WonderQ's tables."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor


def require_migrated(using: str = DEFAULT_DB_ALIAS) -> None:
    """Stop with one line when the database cannot be reached or lacks migrations this code needs.

    Without it a command on a new or not yet upgraded database was Django's "no such table"
    (or "relation does not exist") traceback, and on an unreachable one psycopg's.
    """
    connection = connections[using]
    name = connection.settings_dict["NAME"]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot read the database {name}: {reason}") from None
    if plan:
        first = plan[0][0]
        raise CommandError(
            f"the database {name} lacks {len(plan)} migration(s), the first {first.app_label}.{first.name}: "
            "run `python manage.py migrate` first"
        )


class DatabaseCommand(BaseCommand):
    """A command on WonderQ's tables: it checks the database is migrated before anything else."""

    def execute(self, *args, **options):
        require_migrated(options.get("database") or DEFAULT_DB_ALIAS)
        return super().execute(*args, **options)
