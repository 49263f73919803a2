"""Messages lose their plain index on queue; acked tombstones get a partial index that leads with it.

Every receive, ack and timed-out lease writes a new row version, and each gives every plain
index a new entry: on PostgreSQL the sweep's move spent a third of its CPU inserting them. No
query needs queues_message_queue_id any more: each names the statuses it reads, and every status
now has a partial index that leads with the queue (ready, leased, review, and here acked).
Pruning walks acked tombstones queue by queue, oldest first; snapshots count a queue's recent
acks in the same index.

Deleting a queue is the one reader left that names no status: Django's cascade and the
database's key check each read the message table once then.

The plain index goes by a DROP INDEX on both databases: AlterField would rebuild the table on
SQLite, and look the index up by introspection on PostgreSQL. The name is Django's own,
derived from table and column alone. The new index is built before the old one goes.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE, COLUMN, NAME = "queues_message", "queue_id", "queues_message_queue_id_ad230eab"


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0003_delivery_unchecked_keys"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "acked")), fields=["queue", "acked_at"], name="message_queue_acked_idx"
            ),
        ),
        migrations.RemoveIndex(
            model_name="message",
            name="message_acked_idx",
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{NAME}"',
                    reverse_sql=f'CREATE INDEX "{NAME}" ON "{TABLE}" ("{COLUMN}")',
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="queue",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="queues.queue",
                    ),
                ),
            ],
        ),
    ]
