INSERT INTO queues_message (queue_id, status, body, attributes, available_at, sent_at, receive_count, receipt, consumer, review_reason, review_note, acked_from, dedup_id)
SELECT 1, 'ready', 'hello', '{}', now(), now(), 0, NULL, '', '', '', '', NULL FROM generate_series(1,100);
