"""PostgreSQL: ack becomes a function that keeps the plan of its statement (as receive, 0006).

As a plain statement, ack was parsed and planned on every request. The plan PostgreSQL would keep
for it scanned the queue's leases (message_leased_idx, whose condition `status = 'leased'` the
statement's own implied) and filtered by id, instead of going to the few primary keys.

Here the statuses an ack accepts are a parameter, so the statement implies no partial index's
condition and none of them can serve it; with sequential and bitmap scans off, its one plan is
the primary key, with `id = ANY(...)` as its index condition, whatever the statistics.
`acked_from` keeps the state the ack found (SET reads the row as it was).
"""

from django.db import migrations

ACK = """
CREATE OR REPLACE FUNCTION queues_message_ack(
    p_ids bigint[], p_queue bigint, p_receipts text[], p_statuses text[], p_now timestamptz
) RETURNS TABLE (
    id bigint, receipt varchar, acked_from varchar, consumer varchar, receive_count integer, review_reason varchar
) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET jit = off
SET enable_seqscan = off SET enable_bitmapscan = off
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH acked AS (
        UPDATE queues_message AS m SET
            status = 'acked',
            acked_at = p_now,
            acked_from = CASE
                WHEN m.status = 'leased' AND m.lease_expires_at > p_now THEN 'leased'
                WHEN m.status = 'leased' THEN 'expired'
                ELSE m.status END
        WHERE m.id = ANY(p_ids) AND m.queue_id = p_queue AND m.receipt = ANY(p_receipts)
          AND m.status = ANY(p_statuses)
        RETURNING m.id, m.receipt, m.acked_from, m.consumer, m.receive_count, m.review_reason
    )
    SELECT a.id, a.receipt, a.acked_from, a.consumer, a.receive_count, a.review_reason FROM acked AS a;
END
$fn$"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ACK)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS queues_message_ack(bigint[], bigint, text[], text[], timestamptz)")


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0006_receive_function"),
    ]

    operations = [migrations.RunPython(create, drop)]
