"""PostgreSQL: the ack function can be asked for live leases only, so a late ack is recorded the same way, swept or not.

An ack whose lease had run out but not yet been swept was acked by the first statement as
"acked_late", with no history row and, in a review queue, no review decision; the same ack after
the sweep wrote both. The code now asks the function for `live` leases (leased, not run out) on the
hot path, and sends the others through the late ack's transaction, which first moves them where
their expiry takes them, as the sweep would (rule 2), and then records them as after a sweep.

The statuses an ack accepts stay a parameter (see 0007): `live` joins the stored statuses, and
`leased` keeps meaning any lease, run out or not, for code from before this migration (a rolling
restart, other hosts on the same database), which goes on working as it did.
"""

import importlib

from django.db import migrations

_0007 = importlib.import_module("queues.migrations.0007_ack_function")

_STATUSES = "          AND m.status = ANY(p_statuses)\n"
ACK = _0007.ACK.replace(
    _STATUSES,
    "          AND (m.status = ANY(p_statuses)\n"
    "               OR m.status = 'leased' AND m.lease_expires_at > p_now AND 'live' = ANY(p_statuses))\n",
)
assert ACK != _0007.ACK, "0007's function text changed: write 0011's out in full"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ACK)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0007.ACK)


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0010_sweep_function"),
    ]

    operations = [migrations.RunPython(forward, backward)]
