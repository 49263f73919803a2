"""Drop two indexes that every expired lease (and every receive) paid a write for, and no query reads.

- queues_delivery.message_id: delivery_message_idx (message_id, attempt) serves every lookup by message.
- queues_message.leased_by_id: only deleting a user looks messages up by it (one scan then).

A plain DROP INDEX on both databases: AlterField would rebuild both tables on SQLite, and drop and
re-validate the foreign key on PostgreSQL, only to drop an index. The names are Django's own,
derived from table and column alone.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

INDEXES = [
    ("queues_delivery", "message_id", "queues_delivery_message_id_1d66cf15"),
    ("queues_message", "leased_by_id", "queues_message_leased_by_id_4ee95262"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for table, column, name in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="message",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="deliveries",
                        to="queues.message",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="leased_by",
                    field=models.ForeignKey(
                        blank=True,
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
