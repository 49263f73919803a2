"""PostgreSQL: every message a receive leases gets a receipt token of its own.

Until now one random token, drawn in Python, served the whole batch of a receive: whoever held one
receipt of a batch could build the others from their ids. The function now draws each token in
the statement (`gen_random_uuid()`, PostgreSQL's strong random source): 16 hex digits, the first
8 bytes of the UUID, 60 of whose 64 bits are random (the 13th digit is the UUID's version). In
psql it took about 0.9 µs a row. SQLite's statement draws its own with `randomblob`
(queues/services/messages.py).

The function loses its token parameter. The old signature stays, as a call of the new one that
ignores the token it is given: a process still running the code from before this migration (a
rolling restart, other hosts on the same database) keeps receiving, with a token per message too.
A later release's migration may drop it.
"""

import importlib

from django.db import migrations

_0006 = importlib.import_module("queues.migrations.0006_receive_function")

_NEW_SIGNATURE = "queues_message_receive(bigint, timestamptz, timestamptz, integer, text, bigint)"

RECEIVE = _0006.RECEIVE.replace("p_limit integer,\n    p_token text, ", "p_limit integer,\n    ").replace(
    "CAST(m.id AS text) || '.' || p_token",
    "CAST(m.id AS text) || '.' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex')",
)
assert "p_token" not in RECEIVE, "0006's function text changed: write 0009's out in full"

# The signature of 0006, for the code before this migration: the new function, the token unused.
RECEIVE_OLD_SIGNATURE = """
CREATE OR REPLACE FUNCTION queues_message_receive(
    p_queue bigint, p_now timestamptz, p_expires timestamptz, p_limit integer,
    p_token text, p_consumer text, p_user bigint
) RETURNS TABLE (
    id bigint, body text, attributes jsonb, receipt varchar, receive_count integer, sent_at timestamptz
) LANGUAGE sql
AS $fn$
    SELECT * FROM queues_message_receive(p_queue, p_now, p_expires, p_limit, p_consumer, p_user)
$fn$"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RECEIVE)
        schema_editor.execute(RECEIVE_OLD_SIGNATURE)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0006.RECEIVE)
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {_NEW_SIGNATURE}")


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0008_queue_limits_follow_settings"),
    ]

    operations = [migrations.RunPython(forward, backward)]
