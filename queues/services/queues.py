"""Queue services: create, update, delete, purge and live counts."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Min, Q

from queues.models import Message, Queue


class QueueExists(Exception):
    """A queue with that name already exists."""


QUEUE_FIELDS = ("visibility_timeout", "on_timeout", "max_receives", "delay_seconds", "max_message_bytes")


def queue_create(*, name: str, owner, **settings) -> Queue:
    """Create a queue owned by `owner`; raises QueueExists when the name is taken."""
    unknown = set(settings) - set(QUEUE_FIELDS)
    if unknown:
        raise TypeError(f"unknown queue settings: {sorted(unknown)}")
    try:
        with transaction.atomic():
            return Queue.objects.create(name=name, owner=owner, **settings)
    except IntegrityError as exc:
        raise QueueExists(name) from exc


def queue_update(*, queue: Queue, **settings) -> Queue:
    """Change a queue's settings (only the fields given)."""
    unknown = set(settings) - set(QUEUE_FIELDS)
    if unknown:
        raise TypeError(f"unknown queue settings: {sorted(unknown)}")
    for field, value in settings.items():
        setattr(queue, field, value)
    queue.save(update_fields=[*settings, "updated_at"])
    return queue


def queue_delete(*, queue: Queue) -> None:
    """Delete a queue with all its messages (one DELETE per table)."""
    with transaction.atomic():
        queue.delete()


def queue_purge(*, queue: Queue) -> int:
    """READY (and delayed) -> deleted for one queue; returns how many."""
    deleted, _ = Message.objects.filter(queue=queue, status=Message.Status.READY).delete()
    return deleted


def _count_filters(now: dt.datetime) -> dict[str, Q]:
    expired = Q(status=Message.Status.LEASED, lease_expires_at__lte=now)
    redeliverable = Q(queue__on_timeout=Queue.OnTimeout.REQUEUE, receive_count__lt=F("queue__max_receives"))
    return {
        # An expired lease is counted where time has already put it, sweep or not.
        "ready": Q(status=Message.Status.READY, available_at__lte=now) | (expired & redeliverable),
        "delayed": Q(status=Message.Status.READY, available_at__gt=now),
        "leased": Q(status=Message.Status.LEASED, lease_expires_at__gt=now),
        "review": Q(status=Message.Status.REVIEW) | (expired & ~redeliverable),
    }


def queue_counts(*, queue_ids: list[int], now: dt.datetime) -> dict[int, dict]:
    """Live counts per queue id: ready, delayed, leased, review, oldest_ready_age_seconds."""
    filters = _count_filters(now)
    rows = (
        Message.objects.filter(queue_id__in=queue_ids)
        .exclude(status=Message.Status.ACKED)
        .values("queue_id")
        .annotate(
            **{name: Count("id", filter=condition) for name, condition in filters.items()},
            oldest_ready=Min("available_at", filter=Q(status=Message.Status.READY, available_at__lte=now)),
        )
        .order_by()
    )
    empty = {"ready": 0, "delayed": 0, "leased": 0, "review": 0, "oldest_ready_age_seconds": None}
    counts = {queue_id: dict(empty) for queue_id in queue_ids}
    for row in rows:
        oldest = row.pop("oldest_ready")
        queue_id = row.pop("queue_id")
        row["oldest_ready_age_seconds"] = max(0.0, (now - oldest).total_seconds()) if oldest else None
        counts[queue_id] = row
    return counts
