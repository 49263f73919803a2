"""Bulk data for benchmarks: many expired leases in one statement, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from queues.models import Queue
from queues.services._sql import MESSAGE, db_dt


def expired_leases_create(*, queue: Queue, count: int, expired_at: dt.datetime) -> None:
    """Insert `count` LEASED messages whose lease ran out at `expired_at` (one INSERT ... SELECT).

    Each is leased by the queue's owner, as a lease taken through the API always names a user,
    so the sweep pays for that foreign key as it does in production. None for a count below 1.
    """
    if count < 1:  # the recursive sequence below always holds its first row
        return
    leased_at = db_dt(expired_at - dt.timedelta(seconds=queue.visibility_timeout))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %(count)s)
            INSERT INTO {MESSAGE} (queue_id, status, body, attributes, sent_at, available_at, receive_count,
                                   receipt, leased_at, lease_expires_at, consumer, leased_by_id, review_reason,
                                   review_note, acked_from)
            SELECT %(queue)s, 'leased', 'bench', '{{}}', %(leased_at)s, %(leased_at)s, 1, 'bench.' || CAST(n AS TEXT),
                   %(leased_at)s, %(expired_at)s, 'bench', %(user)s, '', '', ''
            FROM seq
            """,
            {
                "count": count,
                "queue": queue.id,
                "leased_at": leased_at,
                "expired_at": db_dt(expired_at),
                "user": queue.owner_id,
            },
        )
