"""Bulk review operations for maintainers: select by filters, then move in bounded batches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.utils import timezone

from queues.models import Queue, ReviewItem
from queues.services.leases import leases_sweep
from queues.services.review import review_requeue


def review_matching(
    *,
    queue: str | None = None,
    reason: str | None = None,
    consumer: str | None = None,
    older_than: dt.timedelta | None = None,
    now: dt.datetime | None = None,
):
    """The review items that match every given filter, oldest first."""
    now = now or timezone.now()
    items = ReviewItem.objects.all()
    if queue:
        items = items.filter(queue__name=queue)
    if reason:
        items = items.filter(review_reason=reason)
    if consumer is not None:
        items = items.filter(consumer=consumer)
    if older_than is not None:
        items = items.filter(review_at__lte=now - older_than)
    return items.order_by("review_at", "id")


def review_catch_up(*, queue: str | None = None, now: dt.datetime | None = None) -> None:
    """Sweep the leases that have run out, in every queue or the one named, to the end.

    They are in review (or, in a requeue queue, back in ready) by time, rule 2, whether or not the
    scheduled sweep has been: a bulk requeue and its dry run call this first. (The review lists,
    which answer while someone waits, sweep one batch at most.)
    """
    queue_ids = list(Queue.objects.filter(name=queue).values_list("id", flat=True)) if queue else None
    leases_sweep(now=now or timezone.now(), queue_ids=queue_ids)


def review_requeue_matching(
    *,
    actor: str,
    delay_seconds: int = 0,
    note: str = "",
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    **filters,
) -> int:
    """REVIEW -> READY for every item matching `filters`, `batch_size` a transaction; returns how many."""
    now = now or timezone.now()
    review_catch_up(queue=filters.get("queue"), now=now)
    total = 0
    after_id = 0
    while True:
        # Walk by id so items requeued meanwhile by someone else are simply not found again.
        batch = list(
            review_matching(now=now, **filters)
            .filter(id__gt=after_id)
            .order_by("id")
            .values_list("id", "queue_id")[:batch_size]
        )
        if not batch:
            return total
        by_queue: dict[int, list[int]] = {}
        for message_id, queue_id in batch:
            by_queue.setdefault(queue_id, []).append(message_id)
        for queue in Queue.objects.filter(id__in=by_queue):
            total += len(
                review_requeue(
                    queue=queue, ids=by_queue[queue.id], actor=actor, delay_seconds=delay_seconds, note=note, now=now
                )
            )
        after_id = batch[-1][0]
        if progress:
            progress(total)
