"""Periodic upkeep: per-queue stats snapshots and retention pruning, each in bounded statements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.utils import timezone

from queues.conf import app_settings
from queues.models import Delivery, Message, Queue, QueueSnapshot, ReviewDecision
from queues.services.queues import queue_counts


def stats_snapshot(*, now: dt.datetime | None = None) -> int:
    """Record every queue's depth and what was sent and acked since its last snapshot; returns how many.

    A fixed number of statements whatever the number of queues: each queue's previous snapshot is
    an index probe of one statement, and what was sent and acked is read once for every group of
    queues that share a starting point (after one snapshot, that is all of them).
    """
    now = now or timezone.now()
    latest = QueueSnapshot.objects.filter(queue_id=OuterRef("pk")).order_by("-taken_at")
    previous = {
        row["id"]: row
        for row in Queue.objects.order_by("id")
        .annotate(
            taken_at=Subquery(latest.values("taken_at")[:1]),
            last_message_id=Subquery(latest.values("last_message_id")[:1]),
        )
        .values("id", "taken_at", "last_message_id")
    }
    if not previous:
        return 0
    queue_ids = list(previous)
    counts = queue_counts(queue_ids=queue_ids, now=now)
    seen = {queue_id: row["last_message_id"] for queue_id, row in previous.items() if row["taken_at"] is not None}
    # A queue without a snapshot yet was made since the last one: its messages are all newer.
    newest_seen = max(seen.values(), default=0)
    sent, top = _sent_since({queue_id: seen.get(queue_id, newest_seen) for queue_id in queue_ids})
    first_since = now - dt.timedelta(minutes=1)
    acked = _acked_since({queue_id: row["taken_at"] or first_since for queue_id, row in previous.items()}, now=now)
    QueueSnapshot.objects.bulk_create(
        QueueSnapshot(
            queue_id=queue_id,
            taken_at=now,
            sent=sent.get(queue_id, 0),
            acked=acked.get(queue_id, 0),
            last_message_id=top,
            **{k: counts[queue_id][k] for k in ("ready", "delayed", "leased", "review")},
        )
        for queue_id in queue_ids
    )
    return len(queue_ids)


def _acked_since(since: dict[int, dt.datetime], *, now: dt.datetime) -> dict[int, int]:
    """How many messages each queue acked after its own `since` and up to `now`.

    One grouped count per distinct `since`, each a range of message_queue_acked_idx per queue.
    """
    by_since: dict[dt.datetime, list[int]] = {}
    for queue_id, start in since.items():
        by_since.setdefault(start, []).append(queue_id)
    acked: dict[int, int] = {}
    for start, queue_ids in by_since.items():
        rows = (
            Message.objects.filter(
                status=Message.Status.ACKED, queue_id__in=queue_ids, acked_at__gt=start, acked_at__lte=now
            )
            .order_by()
            .values("queue_id")
            .annotate(n=Count("id"))
        )
        acked.update((row["queue_id"], row["n"]) for row in rows)
    return acked


def _sent_since(seen: dict[int, int]) -> tuple[dict[int, int], int]:
    """How many messages each queue got after the id it last saw, and the highest id read.

    Ids only grow, so that is a primary-key range over the new rows alone, read once for every
    queue that last saw the same id: after one snapshot, that is all of them. (Messages have no
    index on queue alone; each status has its own.) A send that commits after a snapshot has read
    past its ids is not counted: these are the dashboard's rates, not a ledger.
    """
    by_seen: dict[int, list[int]] = {}
    for queue_id, last_id in seen.items():
        by_seen.setdefault(last_id, []).append(queue_id)
    sent: dict[int, int] = {}
    top = max(seen.values(), default=0)
    for last_id, queue_ids in by_seen.items():
        rows = (
            Message.objects.filter(id__gt=last_id, queue_id__in=queue_ids)
            .order_by()
            .values("queue_id")
            .annotate(n=Count("id"), last=Max("id"))
        )
        for row in rows:
            sent[row["queue_id"]] = row["n"]
            top = max(top, row["last"])
    return sent, top


@dataclass
class PruneResult:
    acked: int = 0
    deliveries: int = 0
    snapshots: int = 0
    decisions: int = 0


def _delete_in_batches(queryset, batch: int) -> Iterator[int]:
    """Delete what `queryset` selects, `batch` rows a transaction; yields each transaction's count."""
    while True:
        with transaction.atomic():
            ids = list(queryset.values_list("id", flat=True)[:batch])
            if not ids:
                return
            deleted, _ = queryset.model.objects.filter(id__in=ids).delete()
        yield deleted
        if len(ids) < batch:
            return


def prune(
    *,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete acked tombstones past retention, history of messages that are gone and old snapshots.

    Review decisions only when WONDERQ_DECISION_RETENTION_DAYS is set: by default they are kept.
    `progress` is called with the counts so far after each transaction.
    """
    now = now or timezone.now()
    batch = batch_size or app_settings.SWEEP_BATCH
    if batch < 1:
        raise ValueError(f"a prune batch must be at least 1 row, got {batch}")  # 0 would delete nothing
    result = PruneResult()

    def delete(kind: str, queryset) -> None:
        for deleted in _delete_in_batches(queryset, batch):
            setattr(result, kind, getattr(result, kind) + deleted)
            if progress:
                progress(result)

    acked_before = now - dt.timedelta(seconds=app_settings.ACKED_RETENTION_SECONDS)
    # A tombstone is also what a repeated dedup_id is checked against: one still inside the dedup
    # window stays, whatever the retention (a retention shorter than the window would let a copy in).
    dedup_done = Q(dedup_id__isnull=True) | Q(
        sent_at__lte=now - dt.timedelta(seconds=app_settings.DEDUP_WINDOW_SECONDS)
    )
    for queue_id in Queue.objects.order_by("id").values_list("id", flat=True):
        tombstones = Message.objects.filter(
            dedup_done, status=Message.Status.ACKED, queue_id=queue_id, acked_at__lt=acked_before
        )
        delete("acked", tombstones.order_by("acked_at"))
    delete("deliveries", Delivery.objects.filter(~Q(message_id__in=Message.objects.values("id"))).order_by("id"))
    snapshots_before = now - dt.timedelta(days=app_settings.SNAPSHOT_RETENTION_DAYS)
    delete("snapshots", QueueSnapshot.objects.filter(taken_at__lt=snapshots_before).order_by("taken_at"))
    if app_settings.DECISION_RETENTION_DAYS is not None:
        decisions_before = now - dt.timedelta(days=app_settings.DECISION_RETENTION_DAYS)
        delete("decisions", ReviewDecision.objects.filter(created_at__lt=decisions_before).order_by("id"))
    return result
