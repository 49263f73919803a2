"""An index of snapshots by time alone, for what reads every queue's snapshots of a time range.

The dashboard's totals chart adds up every queue's snapshots of the last 24 hours, and prune
deletes every queue's snapshots past retention. Both read the whole table without it: with the
default 7 days kept, 200 queues are 2,000,000 snapshots, and the totals took 240 ms of SQLite
(65 ms with the index). A snapshot run writes one more index entry per queue a minute.

On PostgreSQL the build takes a lock that holds back writes to the snapshot table (the per-minute
snapshot task) while it runs, a few seconds for millions of snapshots; nothing on the API's path
writes there.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queues', '0011_ack_live_leases'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='queuesnapshot',
            index=models.Index(fields=['taken_at'], name='snapshot_time_idx'),
        ),
    ]
