"""PostgreSQL: every message a receive leases gets a receipt token of its own.

Until now one random token, drawn in Python, served the whole batch of a receive: whoever held one
receipt of a batch could build the others from their ids. The function now draws each token in
the statement (`gen_random_uuid()`, PostgreSQL's strong random source): 16 hex digits, the first
8 bytes of the UUID, 60 of whose 64 bits are random. Measured beside the whole statement it is
about 1 µs a message. The function loses its token parameter; SQLite's statement draws its own
with `randomblob` (queues/services/messages.py).
"""

import importlib

from django.db import migrations

_0006 = importlib.import_module("queues.migrations.0006_receive_function")

_OLD_SIGNATURE = "queues_message_receive(bigint, timestamptz, timestamptz, integer, text, text, bigint)"
_NEW_SIGNATURE = "queues_message_receive(bigint, timestamptz, timestamptz, integer, text, bigint)"

RECEIVE = (
    _0006.RECEIVE.replace("p_limit integer,\n    p_token text, ", "p_limit integer,\n    ")
    .replace(
        "CAST(m.id AS text) || '.' || p_token",
        "CAST(m.id AS text) || '.' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex')",
    )
)
assert "p_token" not in RECEIVE, "0006's function text changed: write 0009's out in full"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {_OLD_SIGNATURE}")
        schema_editor.execute(RECEIVE)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {_NEW_SIGNATURE}")
        schema_editor.execute(_0006.RECEIVE)


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0008_queue_limits_follow_settings"),
    ]

    operations = [migrations.RunPython(forward, backward)]
