"""Delivery history: the database no longer checks its keys to queue and user.

On PostgreSQL each checked key of an inserted row runs a trigger at commit, one row at a time:
for the sweep, which writes a history row per expired lease, those triggers were a third of
its time. The rows are copied from messages whose own keys are checked, and Django still
cascades a queue's deletion to its history and nulls a deleted user (each through its index).

SQLite checks a key at insert through the parent's primary key, which costs little, and
dropping a constraint there means copying the table: the constraints stay until the table is
next rebuilt.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

COLUMNS = (["queue_id"], ["leased_by_id"])


def _foreign_keys(apps, schema_editor) -> tuple[str, dict]:
    table = apps.get_model("queues", "Delivery")._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return table, {
        name: info for name, info in constraints.items() if info["foreign_key"] and info["columns"] in COLUMNS
    }


def drop_checks(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table, keys = _foreign_keys(apps, schema_editor)
    quote = schema_editor.quote_name
    for name in keys:
        schema_editor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")


def add_checks(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("queues", "Delivery")
    table, keys = _foreign_keys(apps, schema_editor)
    present = {tuple(info["columns"]) for info in keys.values()}
    quote = schema_editor.quote_name
    for name in ("queue", "leased_by"):
        field = model._meta.get_field(name)
        if (field.column,) in present:
            continue
        target = field.related_model._meta
        schema_editor.execute(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(f'{table}_{field.column}_fk')} "
            f"FOREIGN KEY ({quote(field.column)}) REFERENCES {quote(target.db_table)} ({quote(target.pk.column)}) "
            "DEFERRABLE INITIALLY DEFERRED"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0002_sweep_index_writes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_checks, add_checks)],
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="queue",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="queues.queue",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="leased_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
    ]
