"""PostgreSQL: a sweep batch of one queue becomes a function, claim and move in one call.

The sweep claimed a queue's next expired leases in one statement, which handed their ctids to
Python as text (about 100 KB for 10,000), and moved them in a second, which parsed that text back
into a tid[] and was planned anew each time. In the function the ctids stay a tid[] in the server,
and both statements keep their plans, made under settings that leave each one plan whatever the
statistics: the claim walks message_leased_idx in key order (no sort), the move is a Tid Scan of
the claimed rows. It reads the queue's settings once and moves rows without joining the queue.
Measured alone on this VM, 1,000,000 leases of one queue, alternating: 7.50–7.71 s (backend CPU
6.97–7.11 s) before, 6.77–7.15 s (6.35–6.72 s) after (queues/static/queues/bench/README.md).

The statements are those of queues/services/leases.py before (`_CLAIM_PG`, `_MOVE_PG`): the
claim locks the rows (SKIP LOCKED steps over rows an ack or another sweep holds), starts after
the previous claim's last (lease_expires_at, id) so that no claim walks over the dead index entries
of rows already moved, and the move decides each row's fate from its queue's settings: in a
requeue queue, back to READY with a history row until it has been delivered max_receives times;
otherwise to review. SQLite has no functions: nothing changes there.
"""

from django.db import migrations

_SETTINGS = """
SET plan_cache_mode = force_generic_plan SET jit = off SET enable_indexscan = on
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off"""

_REDELIVER = "(v_on_timeout = 'requeue' AND m.receive_count < v_max_receives)"

SWEEP_BATCH = f"""
CREATE OR REPLACE FUNCTION queues_sweep_batch(
    p_queue bigint, p_now timestamptz, p_limit integer, p_after_at timestamptz, p_after_id bigint
) RETURNS TABLE (claimed bigint, last_at timestamptz, last_id bigint, review bigint, ready bigint)
LANGUAGE plpgsql {_SETTINGS}
AS $fn$
DECLARE
    picked tid[];
    v_on_timeout text;
    v_max_receives integer;
BEGIN
    review := 0;
    ready := 0;
    WITH batch AS MATERIALIZED (
        SELECT m.ctid, m.id, m.lease_expires_at FROM queues_message AS m
        WHERE m.queue_id = p_queue AND m.status = 'leased' AND m.lease_expires_at <= p_now
          AND (m.lease_expires_at, m.id) > (COALESCE(p_after_at, '-infinity'), COALESCE(p_after_id, 0))
        ORDER BY m.lease_expires_at, m.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), last AS (
        SELECT max(b.lease_expires_at) AS at FROM batch AS b
    )
    SELECT array_agg(b.ctid), count(*), (SELECT l.at FROM last AS l),
           max(b.id) FILTER (WHERE b.lease_expires_at = (SELECT l.at FROM last AS l))
    INTO picked, claimed, last_at, last_id FROM batch AS b;
    IF claimed = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT q.on_timeout, q.max_receives INTO v_on_timeout, v_max_receives FROM queues_queue AS q WHERE q.id = p_queue;
    PERFORM set_config('enable_indexscan', 'off', true);
    WITH moved AS (
        UPDATE queues_message AS m SET
            status = CASE WHEN {_REDELIVER} THEN 'ready' ELSE 'review' END,
            available_at = CASE WHEN {_REDELIVER} THEN m.lease_expires_at ELSE m.available_at END,
            review_reason = CASE
                WHEN {_REDELIVER} THEN m.review_reason
                WHEN v_on_timeout = 'review' THEN 'timeout'
                ELSE 'max_receives' END,
            review_at = CASE WHEN {_REDELIVER} THEN m.review_at ELSE m.lease_expires_at END,
            review_note = CASE WHEN {_REDELIVER} THEN m.review_note ELSE '' END
        WHERE m.ctid = ANY(picked)
        RETURNING m.id, m.queue_id, m.status, m.receive_count, m.consumer, m.leased_by_id, m.leased_at,
                  m.lease_expires_at
    ), history AS (
        INSERT INTO queues_delivery
            (message_id, queue_id, attempt, consumer, leased_by_id, leased_at, ended_at, outcome, reason)
        SELECT mv.id, mv.queue_id, mv.receive_count, mv.consumer, mv.leased_by_id, mv.leased_at,
               mv.lease_expires_at, 'expired', ''
        FROM moved AS mv WHERE mv.status = 'ready'
    )
    SELECT count(*) FILTER (WHERE mv.status = 'review'), count(*) FILTER (WHERE mv.status = 'ready')
    INTO review, ready FROM moved AS mv;
    RETURN NEXT;
END
$fn$"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SWEEP_BATCH)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS queues_sweep_batch(bigint, timestamptz, integer, timestamptz, bigint)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0009_receipt_per_message"),
    ]

    operations = [migrations.RunPython(create, drop)]
