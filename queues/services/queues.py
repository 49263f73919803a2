"""Queue services: create, update, delete, purge and live counts."""

from __future__ import annotations

import datetime as dt
import time

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from queues.conf import app_settings
from queues.models import Message, Queue, QueueGrant
from queues.services._sql import MESSAGE, QUEUE, any_of, db_dt, fetch, py_dt
from queues.services.leases import leases_expire_for_queue


class QueueExists(Exception):
    """A queue with that name already exists."""


QUEUE_FIELDS = ("visibility_timeout", "on_timeout", "max_receives", "delay_seconds", "max_message_bytes")

_COLUMNS = [field.attname for field in Queue._meta.concrete_fields]
_ACCESS_SQL = f"""
SELECT {", ".join(f"q.{column}" for column in _COLUMNS)}, g.can_send, g.can_receive, g.can_manage
FROM {QUEUE} AS q LEFT JOIN {QueueGrant._meta.db_table} AS g ON g.queue_id = q.id AND g.user_id = %s
WHERE q.name = %s
"""


def queue_access(*, name: str, user_id: int | None) -> tuple[Queue | None, dict[str, bool] | None]:
    """The queue named `name` and the user's grant on it (None when none), in one indexed statement.

    Every API call starts here, so it skips the ORM's query building.
    """
    rows = fetch(_ACCESS_SQL, [user_id, name], reuse_plan=True)
    if not rows:
        return None, None
    row = rows[0]
    queue = Queue.from_db("default", _COLUMNS, [row[column] for column in _COLUMNS])
    queue.created_at, queue.updated_at = py_dt(queue.created_at), py_dt(queue.updated_at)
    if row["can_send"] is None:
        return queue, None
    return queue, {need: bool(row[f"can_{need}"]) for need in ("send", "receive", "manage")}


# (queue name, user id) -> (deadline on the monotonic clock, queue, grant). Bounded: names
# of queues that do not exist are never stored.
_access: dict[tuple[str, int | None], tuple[float, Queue, dict[str, bool] | None]] = {}
_access_generation = [0]  # bumped by every clear
_ACCESS_MAX = 10_000


def queue_access_cached(*, name: str, user_id: int | None) -> tuple[Queue | None, dict[str, bool] | None]:
    """`queue_access`, kept in this process for QUEUE_CACHE_SECONDS (default 1 s) when the queue exists.

    The hot path looks a queue and its grant up on every send, receive and ack; this saves
    that statement. A change made through this process (services, admin, API) clears the
    cache at once; one made by another process is seen within QUEUE_CACHE_SECONDS, as a
    revoked token is within AUTH_CACHE_SECONDS. A send to a queue deleted meanwhile still
    fails (the message row's foreign key) and is answered 404 by the normal stack.
    """
    ttl = app_settings.QUEUE_CACHE_SECONDS
    if ttl <= 0:
        return queue_access(name=name, user_id=user_id)
    now = time.monotonic()
    entry = _access.get((name, user_id))
    if entry is not None and entry[0] > now:
        return entry[1], entry[2]
    generation = _access_generation[0]
    queue, grant = queue_access(name=name, user_id=user_id)
    # Cleared while the lookup ran (a green thread of this process changed a queue or grant):
    # what it read may be from before the change, so it answers this request but is not kept.
    if queue is not None and generation == _access_generation[0]:
        if len(_access) >= _ACCESS_MAX:
            _access.clear()
        _access[(name, user_id)] = (now + ttl, queue, grant)
    return queue, grant


def queue_access_cache_clear(**_signal) -> None:
    """Forget every cached queue and grant in this process (after any change to a queue or grant).

    Inside a transaction the change is not yet visible to other requests, and one of them may
    cache the old rows meanwhile: the cache is cleared again when the transaction commits.
    """
    _access_clear()
    if connection.in_atomic_block:
        transaction.on_commit(_access_clear)


def _access_clear() -> None:
    _access_generation[0] += 1
    _access.clear()


for _model in (Queue, QueueGrant):
    post_save.connect(queue_access_cache_clear, sender=_model, dispatch_uid=f"wonderq_access_{_model.__name__}")
    post_delete.connect(queue_access_cache_clear, sender=_model, dispatch_uid=f"wonderq_access_{_model.__name__}")


def _check(fields: dict) -> None:
    """Raise ValidationError, with the messages of each bad field, unless every value is in range.

    The model's fields hold the limits (the WONDERQ_* settings), so the API, the admin and the
    commands refuse the same values; a value out of range never reaches a table.
    """
    unknown = set(fields) - {"name", *QUEUE_FIELDS}
    if unknown:
        raise TypeError(f"unknown queue settings: {sorted(unknown)}")
    errors = {}
    for name, value in fields.items():
        try:
            Queue._meta.get_field(name).clean(value, None)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)


def queue_create(*, name: str, owner, **settings) -> Queue:
    """Create a queue owned by `owner`; raises QueueExists when the name is taken, ValidationError for a bad value."""
    _check({"name": name, **settings})
    try:
        with transaction.atomic():
            return Queue.objects.create(name=name, owner=owner, **settings)
    except IntegrityError:
        if Queue.objects.filter(name=name).exists():
            raise QueueExists(name) from None
        raise


def queue_update(*, queue: Queue, now: dt.datetime | None = None, **settings) -> Queue:
    """Change a queue's settings (only the fields given); raises Queue.DoesNotExist if it was deleted meanwhile.

    Raises ValidationError for a value out of range, and changes nothing then.
    """
    _check(settings)
    now = now or timezone.now()
    # One UPDATE whose row count is the verdict: a queue deleted since it was looked up is not
    # an error of the database (save() raises DatabaseError for it) but a queue that is gone.
    updated = Queue.objects.filter(pk=queue.pk).update(**settings, updated_at=now)
    queue_access_cache_clear()
    if not updated:
        raise Queue.DoesNotExist(queue.name)
    for field, value in settings.items():
        setattr(queue, field, value)
    queue.updated_at = now
    return queue


def queue_delete(*, queue: Queue) -> None:
    """Delete a queue with all its messages (one DELETE per table)."""
    with transaction.atomic():
        queue.delete()


def queue_purge(*, queue: Queue, now: dt.datetime | None = None) -> int:
    """READY (and delayed) -> deleted for one queue; returns how many.

    What is READY by time counts too (rule 2): in a requeue queue a lease that has run out with
    deliveries left, swept or not. Expiry is materialised first, as the sweep would (its history
    row written, and a lease bound for review moved there), so a purge deletes what the counts
    call ready and the next receive cannot hand it out.
    """
    now = now or timezone.now()
    with transaction.atomic():
        leases_expire_for_queue(queue_id=queue.id, now=now)
        deleted, _ = Message.objects.filter(queue=queue, status=Message.Status.READY).delete()
    return deleted


# Statuses are literals, never parameters: only then does SQLite see that a term is a partial
# index's own condition and count from the index alone; given `status = ?` it reads every message
# row to check it (seconds at a million messages). Each subquery is one index range per queue:
# message_ready_idx, message_leased_idx, message_review_idx.
_COUNTS_SQL = f"""
SELECT q.id AS queue_id,
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'ready' AND m.available_at <= %s) AS due,
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'ready' AND m.available_at > %s) AS delayed,
  (SELECT MIN(m.available_at) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'ready' AND m.available_at <= %s) AS oldest_ready,
  -- A redeliverable lease has been ready since it ran out (the sweep sets available_at so).
  (SELECT MIN(m.lease_expires_at) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'leased' AND m.lease_expires_at <= %s
      AND q.on_timeout = 'requeue' AND m.receive_count < q.max_receives) AS oldest_redeliverable,
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'leased' AND m.lease_expires_at > %s) AS leased,
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'review') AS review,
  -- Expired leases the sweep has not moved yet (about a minute's worth) count where time has put them.
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'leased' AND m.lease_expires_at <= %s) AS expired,
  (SELECT COUNT(*) FROM {MESSAGE} m
    WHERE m.queue_id = q.id AND m.status = 'leased' AND m.lease_expires_at <= %s
      AND q.on_timeout = 'requeue' AND m.receive_count < q.max_receives) AS redeliverable
FROM {QUEUE} q
WHERE {{among}}
"""


def queue_counts(*, queue_ids: list[int], now: dt.datetime) -> dict[int, dict]:
    """Live counts per queue id: ready, delayed, leased, review, oldest_ready_age_seconds."""
    empty = {"ready": 0, "delayed": 0, "leased": 0, "review": 0, "oldest_ready_age_seconds": None}
    counts = {queue_id: dict(empty) for queue_id in queue_ids}
    if not queue_ids:
        return counts
    # One array parameter on PostgreSQL: there may be more queues than a statement has placeholders.
    among, id_params = any_of("q.id", queue_ids, "bigint")
    rows = fetch(_COUNTS_SQL.format(among=among), [db_dt(now)] * 7 + id_params)
    for row in rows:
        oldest = min(
            (py_dt(row[name]) for name in ("oldest_ready", "oldest_redeliverable") if row[name] is not None),
            default=None,
        )
        counts[row["queue_id"]] = {
            "ready": row["due"] + row["redeliverable"],
            "delayed": row["delayed"],
            "leased": row["leased"],
            "review": row["review"] + row["expired"] - row["redeliverable"],
            "oldest_ready_age_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else None,
        }
    return counts
