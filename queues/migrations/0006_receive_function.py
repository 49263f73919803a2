"""PostgreSQL: receive becomes a function that keeps the plans of its statements.

Sent as a plain statement, receive was parsed and planned on every request, about half of its
CPU in PostgreSQL at B = 1. A plan PostgreSQL keeps (a generic plan) is chosen from the
statistics of its time and kept until they are next updated (ANALYZE; autoanalyze, once a tenth
of the table has changed; never, with autovacuum off): planned on an almost empty table,
receive's plain statement read and sorted the whole table, and kept while a backlog builds up
it would do so on every receive.

A PL/pgSQL function keeps its statements' plans in the session, and the settings it runs under
leave the planner one plan for each whatever the statistics: the pick walks the ready index in
order, the update goes by ctid straight to the rows picked. `jit` is off, since the costs of
disabled plans would otherwise look worth compiling. On one connection it took receive's
PostgreSQL CPU at B = 1 from 0.52–0.61 to 0.31–0.35 ms (README, Performance, and its measurement log).

queues/services/messages.py keeps SQLite's statement, and tests read the function's plans
(tests/test_hot_path.py). SQLite has no functions: nothing changes there.
"""

from django.db import migrations

# Each call sets these for itself alone (they revert as it returns); the planner then has one
# plan for each statement below whatever the statistics.
_SETTINGS = """
SET plan_cache_mode = force_generic_plan SET jit = off SET enable_indexscan = on
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off"""

# READY -> LEASED for the oldest due messages of one queue, handed back oldest first. The pick
# walks the ready index in order (nothing else gives that order with sorts off) and locks what
# it takes; SKIP LOCKED lets concurrent receivers pass each other. It hands the update the rows'
# ctids, which the lock keeps as they are until the transaction ends, and with index scans off
# too the update's one plan is a Tid Scan straight to them. (As one statement joining the pick
# by id, a plan made on an almost empty table walked the whole ready index for every receive.)
# The status re-check costs nothing and keeps the update a compare-and-swap. The last sort orders
# at most p_limit rows: the only way to order them, it runs whatever sorts cost.
RECEIVE = f"""
CREATE OR REPLACE FUNCTION queues_message_receive(
    p_queue bigint, p_now timestamptz, p_expires timestamptz, p_limit integer,
    p_token text, p_consumer text, p_user bigint
) RETURNS TABLE (
    id bigint, body text, attributes jsonb, receipt varchar, receive_count integer, sent_at timestamptz
) LANGUAGE plpgsql {_SETTINGS}
AS $fn$
#variable_conflict use_column
DECLARE
    picked tid[];
BEGIN
    SELECT array_agg(p.ctid) INTO picked FROM (
        SELECT m.ctid FROM queues_message AS m
        WHERE m.queue_id = p_queue AND m.status = 'ready' AND m.available_at <= p_now
        ORDER BY m.available_at, m.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ) AS p;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('enable_indexscan', 'off', true);
    RETURN QUERY
    WITH leased AS (
        UPDATE queues_message AS m SET
            status = 'leased',
            receipt = CAST(m.id AS text) || '.' || p_token,
            leased_at = p_now,
            lease_expires_at = p_expires,
            consumer = p_consumer,
            leased_by_id = p_user,
            receive_count = m.receive_count + 1
        WHERE m.ctid = ANY(picked) AND m.status = 'ready'
        RETURNING m.id, m.body, m.attributes, m.receipt, m.receive_count, m.sent_at, m.available_at
    )
    SELECT l.id, l.body, l.attributes, l.receipt, l.receive_count, l.sent_at
    FROM leased AS l ORDER BY l.available_at, l.id;
END
$fn$"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RECEIVE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS queues_message_receive(bigint, timestamptz, timestamptz, integer, text, text, bigint)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0005_one_leased_index"),
    ]

    operations = [migrations.RunPython(create, drop)]
