"""The message's key to the user holding its lease: no longer checked by PostgreSQL.

A receive sets the key on every message it leases, and PostgreSQL checks each one in a trigger
at commit, one row at a time, each check locking the user's row (every consumer behind one
service account shares it). `bench --batch 100` on PostgreSQL, a fresh database each run, 4 ABBA
pairs, 2026-12-04 06:25-06:28 UTC: 12,360, 12,400, 12,327, 13,240 acked msg/s with the check,
13,853, 16,047, 12,880, 14,593 without, 1.15x the medians, higher in 4 of 4 (the measurement log,
README). The key only says who held a lease. Django still nulls it when a user is deleted (the
ORM's SET_NULL, as for the delivery history since 0003); what the check alone prevented is a key
to a user deleted while their last receive ran, which the admin and the API show as no user.
The message's key to its queue stays checked: a send racing its queue's deletion must fail.

SQLite checks a key at insert through the parent's primary key, which costs little, and
dropping a constraint there means copying the table: the constraint stays until the table is
next rebuilt.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

COLUMNS = ["leased_by_id"]


def _foreign_keys(apps, schema_editor) -> tuple[str, dict]:
    table = apps.get_model("queues", "Message")._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return table, {
        name: info for name, info in constraints.items() if info["foreign_key"] and info["columns"] == COLUMNS
    }


def drop_check(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table, keys = _foreign_keys(apps, schema_editor)
    quote = schema_editor.quote_name
    for name in keys:
        schema_editor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")


def add_check(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table, keys = _foreign_keys(apps, schema_editor)
    if keys:
        return
    field = apps.get_model("queues", "Message")._meta.get_field("leased_by")
    target = field.related_model._meta
    quote = schema_editor.quote_name
    # Keys to a user who is gone (possible while unchecked) would fail the new check, and the history's
    # copies of them 0003's check if migrated back that far: they name no one, so they become NULL.
    for model in ("Message", "Delivery"):
        rows = quote(apps.get_model("queues", model)._meta.db_table)
        schema_editor.execute(
            f"UPDATE {rows} SET {quote(field.column)} = NULL WHERE {quote(field.column)} IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {quote(target.db_table)} AS u WHERE u.{quote(target.pk.column)} = "
            f"{rows}.{quote(field.column)})"
        )
    schema_editor.execute(
        f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(f'{table}_{field.column}_fk')} "
        f"FOREIGN KEY ({quote(field.column)}) REFERENCES {quote(target.db_table)} ({quote(target.pk.column)}) "
        "DEFERRABLE INITIALLY DEFERRED"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0012_snapshot_time_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_check, add_check)],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="leased_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        help_text="User behind the token that received the message.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
    ]
