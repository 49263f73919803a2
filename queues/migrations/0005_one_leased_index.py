"""Leased messages keep one index, on (queue, lease_expires_at, id), instead of two.

Every receive wrote an entry in both (lease_expires_at, id) and (queue, lease_expires_at), and
on SQLite every ack and every timed-out lease removed one from each. The sweep, the one reader
of the global expiry order, now walks queue by queue (queues/services/leases.py); everything
else already read one queue's leases.

Both go and the new one is built in the migration's transaction, so no other session sees the
table without an index on its leases.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0004_message_queue_index"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="message", name="message_leased_idx"),
        migrations.RemoveIndex(model_name="message", name="message_queue_leased_idx"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "leased")),
                fields=["queue", "lease_expires_at", "id"],
                name="message_leased_idx",
            ),
        ),
    ]
