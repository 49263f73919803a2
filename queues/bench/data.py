"""Bulk data for benchmarks: many expired leases in one statement, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from queues.models import Queue
from queues.services._sql import MESSAGE, db_dt


def expired_leases_create(*, queue: Queue, count: int, expired_at: dt.datetime) -> None:
    """Insert `count` LEASED messages whose lease ran out at `expired_at` (one INSERT ... SELECT)."""
    leased_at = expired_at - dt.timedelta(seconds=queue.visibility_timeout)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s)
            INSERT INTO {MESSAGE} (queue_id, status, body, attributes, sent_at, available_at, receive_count,
                                   receipt, leased_at, lease_expires_at, consumer, review_reason, review_note,
                                   acked_from)
            SELECT %s, 'leased', 'bench', '{{}}', %s, %s, 1, 'bench.' || CAST(n AS TEXT), %s, %s, 'bench', '', '', ''
            FROM seq
            """,
            [count, queue.id, db_dt(leased_at), db_dt(leased_at), db_dt(leased_at), db_dt(expired_at)],
        )
