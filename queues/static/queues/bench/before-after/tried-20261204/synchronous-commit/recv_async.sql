CREATE OR REPLACE FUNCTION public.queues_message_receive(p_queue bigint, p_now timestamp with time zone, p_expires timestamp with time zone, p_limit integer, p_consumer text, p_user bigint)
 RETURNS TABLE(id bigint, body text, attributes jsonb, receipt character varying, receive_count integer, sent_at timestamp with time zone)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
 SET enable_indexscan TO 'on'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
 SET enable_sort TO 'off'
AS $function$
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
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM set_config('enable_indexscan', 'off', true);
    RETURN QUERY
    WITH leased AS (
        UPDATE queues_message AS m SET
            status = 'leased',
            receipt = CAST(m.id AS text) || '.' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex'),
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
$function$

