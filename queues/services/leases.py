"""Lease expiry: LEASED -> REVIEW (or READY) once the lease has run out.

Expiry is decided by time (DESIGN rule 2); these functions only *materialise* it,
in set-based statements. `leases_sweep` walks the partial index on leased
messages in expiry order, at most `SWEEP_BATCH` rows a transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from queues.conf import app_settings
from queues.models import Delivery, Message
from queues.services._sql import MESSAGE, QUEUE, db_dt, fetch, marks

DELIVERY = Delivery._meta.db_table

# In a requeue queue a timed-out message goes back to READY until it has used up max_receives.
_REDELIVER = f"(q.on_timeout = 'requeue' AND {MESSAGE}.receive_count < q.max_receives)"

_EXPIRE_SQL = f"""
UPDATE {MESSAGE} SET
    status = CASE WHEN {_REDELIVER} THEN 'ready' ELSE 'review' END,
    available_at = CASE WHEN {_REDELIVER} THEN {MESSAGE}.lease_expires_at ELSE {MESSAGE}.available_at END,
    review_reason = CASE
        WHEN {_REDELIVER} THEN {MESSAGE}.review_reason
        WHEN q.on_timeout = 'review' THEN 'timeout'
        ELSE 'max_receives' END,
    review_at = CASE WHEN {_REDELIVER} THEN {MESSAGE}.review_at ELSE {MESSAGE}.lease_expires_at END,
    review_note = CASE WHEN {_REDELIVER} THEN {MESSAGE}.review_note ELSE '' END
FROM {QUEUE} AS q
WHERE q.id = {MESSAGE}.queue_id
  AND {MESSAGE}.status = 'leased' AND {MESSAGE}.lease_expires_at <= %s
  AND {{scope}}
RETURNING {MESSAGE}.id, {MESSAGE}.status
"""


def deliveries_record(*, ids: Sequence[int], outcome: str, ended_at: dt.datetime | None, reason: str = "") -> None:
    """Write one history row per message id for the delivery that just ended without an ack.

    Runs after the state change, so it reads the lease fields that change kept
    (consumer, user, leased_at). `ended_at=None` takes each lease's own expiry.
    """
    if not ids:
        return
    ended = "lease_expires_at" if ended_at is None else "%s"
    params = [] if ended_at is None else [db_dt(ended_at)]
    fetch(
        f"""
        INSERT INTO {DELIVERY} (message_id, queue_id, attempt, consumer, leased_by_id, leased_at,
                                ended_at, outcome, reason)
        SELECT id, queue_id, receive_count, consumer, leased_by_id, leased_at, {ended}, %s, %s
        FROM {MESSAGE} WHERE id IN ({marks(ids)})
        """,
        [*params, outcome, reason, *ids],
    )


def _expire(*, now: dt.datetime, scope: str, params: list) -> dict[str, int]:
    rows = fetch(_EXPIRE_SQL.format(scope=scope), [db_dt(now), *params])
    deliveries_record(ids=[row["id"] for row in rows], outcome=Delivery.Outcome.EXPIRED, ended_at=None)
    moved = {"review": 0, "ready": 0}
    for row in rows:
        moved[row["status"]] += 1
    return moved


def leases_expire_for_queue(*, queue_id: int, now: dt.datetime) -> dict[str, int]:
    """LEASED -> READY/REVIEW for one queue's expired leases; call inside a transaction."""
    return _expire(now=now, scope=f"{MESSAGE}.queue_id = %s", params=[queue_id])


@dataclass
class SweepResult:
    review: int = 0
    ready: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        return self.review + self.ready


def leases_sweep(
    *,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    progress: Callable[[SweepResult], None] | None = None,
) -> SweepResult:
    """LEASED -> REVIEW / READY for every lease expired at `now`, in bounded batches."""
    now = now or timezone.now()
    batch_size = batch_size or app_settings.SWEEP_BATCH
    result = SweepResult()
    after: tuple | None = None
    while True:
        with transaction.atomic():
            candidates = Message.objects.lease_expired(now=now)
            if after is not None:
                # Keyset walk: never re-read index entries an earlier batch already moved.
                candidates = candidates.filter(
                    Q(lease_expires_at__gt=after[1]) | Q(lease_expires_at=after[1], id__gt=after[0])
                )
            # SKIP LOCKED lets two sweepers share the work on PostgreSQL; the UPDATE
            # re-checks the status, which is what makes it safe on SQLite.
            batch = list(
                candidates.order_by("lease_expires_at", "id")
                .select_for_update(skip_locked=True)
                .values_list("id", "lease_expires_at")[:batch_size]
            )
            if not batch:
                break
            ids = [row[0] for row in batch]
            moved = _expire(now=now, scope=f"{MESSAGE}.id IN ({marks(ids)})", params=ids)
        result.review += moved["review"]
        result.ready += moved["ready"]
        result.batches += 1
        after = batch[-1]
        if progress:
            progress(result)
        if len(batch) < batch_size:
            break
    return result
