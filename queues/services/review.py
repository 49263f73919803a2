"""Review decisions: REVIEW -> READY (requeue) or -> deleted (discard), each one logged."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from queues.models import Queue, ReviewDecision
from queues.services._sql import MESSAGE, db_dt, fetch, marks
from queues.services.leases import deliveries_record_timed_out, leases_expire_ids


def _log(*, queue: Queue, rows: list[dict], action: str, operator, actor: str, note: str, delay: int, now) -> None:
    ReviewDecision.objects.bulk_create(
        ReviewDecision(
            queue=queue,
            queue_name=queue.name,
            message_id=row["id"],
            action=action,
            operator=operator if getattr(operator, "pk", None) else None,
            actor=actor,
            note=note,
            delay_seconds=delay,
            review_reason=row["review_reason"],
            receive_count=row["receive_count"],
            created_at=now,
        )
        for row in rows
    )


def _actor(operator, actor: str | None) -> str:
    return actor or getattr(operator, "get_username", lambda: "system")()


def review_requeue(
    *,
    queue: Queue,
    ids: Sequence[int],
    operator=None,
    actor: str | None = None,
    delay_seconds: int = 0,
    note: str = "",
    now: dt.datetime | None = None,
) -> list[int]:
    """REVIEW -> READY (after an optional delay) for the given ids still in review; returns those moved."""
    now = now or timezone.now()
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    with transaction.atomic():
        leases_expire_ids(queue_id=queue.id, ids=ids, now=now)  # in review by time, if not yet by the sweep
        deliveries_record_timed_out(queue_id=queue.id, ids=ids)
        rows = fetch(
            f"""
            UPDATE {MESSAGE} SET status = 'ready', available_at = %s, receipt = NULL, review_at = NULL
            WHERE queue_id = %s AND id IN ({marks(ids)}) AND status = 'review'
            RETURNING id, review_reason, receive_count
            """,
            [db_dt(now + dt.timedelta(seconds=delay_seconds)), queue.id, *ids],
        )
        _log(
            queue=queue,
            rows=rows,
            action=ReviewDecision.Action.REQUEUED,
            operator=operator,
            actor=_actor(operator, actor),
            note=note,
            delay=delay_seconds,
            now=now,
        )
    return [row["id"] for row in rows]


def review_discard(
    *,
    queue: Queue,
    ids: Sequence[int],
    operator=None,
    actor: str | None = None,
    note: str = "",
    now: dt.datetime | None = None,
) -> list[int]:
    """REVIEW -> deleted for the given ids still in review; the decision outlives the message."""
    now = now or timezone.now()
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    with transaction.atomic():
        leases_expire_ids(queue_id=queue.id, ids=ids, now=now)
        deliveries_record_timed_out(queue_id=queue.id, ids=ids)  # history outlives the message until pruned
        rows = fetch(
            f"""
            DELETE FROM {MESSAGE}
            WHERE queue_id = %s AND id IN ({marks(ids)}) AND status = 'review'
            RETURNING id, review_reason, receive_count
            """,
            [queue.id, *ids],
        )
        _log(
            queue=queue,
            rows=rows,
            action=ReviewDecision.Action.DISCARDED,
            operator=operator,
            actor=_actor(operator, actor),
            note=note,
            delay=0,
            now=now,
        )
    return [row["id"] for row in rows]
