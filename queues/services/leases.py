"""Lease expiry: LEASED -> REVIEW (or READY) once the lease has run out.

Expiry is decided by time (DESIGN rule 2); these functions only *materialise* it,
in set-based statements. `leases_sweep` walks the partial index on leased
messages queue by queue, in expiry order, at most `SWEEP_BATCH` rows a transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from queues.conf import app_settings
from queues.models import Delivery, Message, Queue
from queues.services._sql import DELIVERY, MESSAGE, QUEUE, any_of, db_dt, fetch, marks

# In a requeue queue a timed-out message goes back to READY until it has used up max_receives.
_REDELIVER = f"(q.on_timeout = 'requeue' AND {MESSAGE}.receive_count < q.max_receives)"

# A history row copied from the message row of a lease that ran out.
_HISTORY_COLUMNS = "message_id, queue_id, attempt, consumer, leased_by_id, leased_at, ended_at, outcome, reason"
_HISTORY_VALUES = "id, queue_id, receive_count, consumer, leased_by_id, leased_at, lease_expires_at, 'expired', ''"

# One statement decides where each expired lease goes, from its queue's settings (alias q).
_SET = f"""
    status = CASE WHEN {_REDELIVER} THEN 'ready' ELSE 'review' END,
    available_at = CASE WHEN {_REDELIVER} THEN {MESSAGE}.lease_expires_at ELSE {MESSAGE}.available_at END,
    review_reason = CASE
        WHEN {_REDELIVER} THEN {MESSAGE}.review_reason
        WHEN q.on_timeout = 'review' THEN 'timeout'
        ELSE 'max_receives' END,
    review_at = CASE WHEN {_REDELIVER} THEN {MESSAGE}.review_at ELSE {MESSAGE}.lease_expires_at END,
    review_note = CASE WHEN {_REDELIVER} THEN {MESSAGE}.review_note ELSE '' END
"""

_EXPIRE_SQL = f"""
UPDATE {MESSAGE} SET {_SET}
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
    # One array parameter on PostgreSQL: a purge may move more leases than a statement has placeholders.
    among, id_params = any_of("id", ids, "bigint")
    fetch(
        f"""
        INSERT INTO {DELIVERY} ({_HISTORY_COLUMNS})
        SELECT id, queue_id, receive_count, consumer, leased_by_id, leased_at, {ended}, %s, %s
        FROM {MESSAGE} WHERE {among}
        """,
        [*params, outcome, reason, *id_params],
    )


def deliveries_record_timed_out(*, queue_id: int, ids: Sequence[int], receipts: Sequence[str] = ()) -> None:
    """Write the history row of each given message in review whose lease timed out, as it leaves review.

    Such a lease left its delivery on the message row (Message.history), which the next receive
    overwrites. A row an earlier version wrote at expiry is not written twice. With `receipts`,
    only a message whose last delivery had one of them (a late ack; a stale receipt changes nothing).
    """
    if not ids:
        return
    in_review = f"queue_id = %s AND id IN ({marks(ids)}) AND status = 'review'"
    if receipts:
        in_review += f" AND receipt IN ({marks(receipts)})"
    params = [queue_id, *ids, *receipts]
    if connection.vendor == "postgresql":
        # Lock the rows first, in id order: a second requeue, discard or ack of the same message
        # then waits for this one and, once it commits, finds the message gone from review and
        # its history row written. (SQLite's IMMEDIATE transactions already take turns.)
        fetch(f"SELECT id FROM {MESSAGE} WHERE {in_review} ORDER BY id FOR UPDATE", params)
    fetch(
        f"""
        INSERT INTO {DELIVERY} ({_HISTORY_COLUMNS})
        SELECT {_HISTORY_VALUES} FROM {MESSAGE}
        WHERE {in_review} AND review_reason IN ({marks(Message.TIMED_OUT_INTO_REVIEW)})
          AND NOT EXISTS (SELECT 1 FROM {DELIVERY} AS d
                          WHERE d.message_id = {MESSAGE}.id AND d.attempt = {MESSAGE}.receive_count)
        """,
        [*params, *Message.TIMED_OUT_INTO_REVIEW],
    )


def _expire(*, now: dt.datetime, scope: str, params: list) -> dict[str, int]:
    rows = fetch(_EXPIRE_SQL.format(scope=scope), [db_dt(now), *params])
    # Back in the queue, the next receive overwrites the lease fields: keep them as history now.
    # A message in review keeps them on its row until it leaves (Message.history).
    redelivered = [row["id"] for row in rows if row["status"] == "ready"]
    deliveries_record(ids=redelivered, outcome=Delivery.Outcome.EXPIRED, ended_at=None)
    moved = {"review": 0, "ready": 0}
    for row in rows:
        moved[row["status"]] += 1
    return moved


def leases_expire_for_queue(*, queue_id: int, now: dt.datetime) -> dict[str, int]:
    """LEASED -> READY/REVIEW for one queue's expired leases, all of them; call inside a transaction."""
    return _expire_locked(now=now, scope=f"{MESSAGE}.queue_id = %s", params=[queue_id])


# A requeue queue's run-out leases in expiry order, each with whether it has a delivery left by the
# queue's own row (a caller's Queue object may be up to QUEUE_CACHE_SECONDS old). Statuses are
# literals, so SQLite reads message_leased_idx; `{after}` continues after the last one looked at.
_RUN_OUT = f"""
SELECT m.id, m.lease_expires_at, CASE WHEN m.receive_count < q.max_receives THEN 1 ELSE 0 END AS more
FROM {MESSAGE} AS m JOIN {QUEUE} AS q ON q.id = m.queue_id
WHERE m.queue_id = %(queue)s AND m.status = 'leased' AND m.lease_expires_at <= %(now)s {{after}}
ORDER BY m.lease_expires_at, m.id
LIMIT %(limit)s
"""
_RUN_OUT_FIRST = _RUN_OUT.format(after="")
_RUN_OUT_AFTER = _RUN_OUT.format(after="AND (m.lease_expires_at, m.id) > (%(after_at)s, %(after_id)s)")


def leases_expire_for_receive(*, queue: Queue, wanted: int, now: dt.datetime) -> dict[str, int]:
    """Before a receive of `wanted` in a requeue queue: move the run-out leases it could hand out.

    Redelivery is on time even when the sweep is late (rule 2), and in order: the first `wanted`
    run-out leases with a delivery left (and the used-up ones before them, to review) are the ones
    the receive would take before any ready message that became available later. On PostgreSQL a
    lease another receive (or a late ack) holds is stepped over (SKIP LOCKED), as the receive steps
    over a ready message another holds, and the next is taken instead; nothing here waits for a lock.
    At most `SWEEP_BATCH` rows are looked at, so a receive after a long stop of the sweep stays one
    bounded transaction; the sweep moves the rest. Call inside a transaction.
    """
    moved = {"review": 0, "ready": 0}
    budget = app_settings.SWEEP_BATCH
    params = {"queue": queue.id, "now": db_dt(now)}
    sql = _RUN_OUT_FIRST
    while budget > 0 and moved["ready"] < wanted:
        rows = fetch(sql, {**params, "limit": budget}, reuse_plan=True)
        need, prefix = wanted - moved["ready"], []
        for row in rows:
            prefix.append(row)
            need -= row["more"]
            if not need:
                break
        if not prefix:
            break
        among, id_params = any_of(f"{MESSAGE}.id", [row["id"] for row in prefix], "bigint")
        if connection.vendor == "postgresql":
            # Those no one else holds, locked in id order; they stay ours until the receive commits.
            # (SQLite's IMMEDIATE transaction already keeps every other writer out.)
            locked = fetch(
                f"SELECT id FROM {MESSAGE} WHERE {among} AND status = 'leased' AND lease_expires_at <= %s"
                " ORDER BY id FOR UPDATE SKIP LOCKED",
                [*id_params, db_dt(now)],
            )
            among, id_params = any_of(f"{MESSAGE}.id", [row["id"] for row in locked], "bigint")
        for kind, count in _expire(
            now=now, scope=f"{MESSAGE}.queue_id = %s AND {among}", params=[queue.id, *id_params]
        ).items():
            moved[kind] += count
        if need and len(rows) < budget:
            break  # every run-out lease there is has been looked at
        # Some were held elsewhere or changed meanwhile: go on after the last one looked at.
        budget -= len(prefix)
        last = prefix[-1]
        at = last["lease_expires_at"]
        params.update(after_at=db_dt(at) if isinstance(at, dt.datetime) else at, after_id=last["id"])
        sql = _RUN_OUT_AFTER
    return moved


def leases_expire_ids(
    *, queue_id: int, ids: Sequence[int], now: dt.datetime, receipts: Sequence[str] = ()
) -> dict[str, int]:
    """LEASED -> READY/REVIEW for those of these messages whose lease has run out; call inside a transaction.

    A review decision on a message whose lease ran out since the last sweep finds it in review
    (rule 2: expiry is decided by time), not "not found". With `receipts`, only a lease that was
    given one of them (a late ack: a stale receipt changes nothing).
    """
    if not ids:
        return {"review": 0, "ready": 0}
    among, id_params = any_of(f"{MESSAGE}.id", ids, "bigint")
    scope = f"{MESSAGE}.queue_id = %s AND {among}"
    params = [queue_id, *id_params]
    if receipts:
        scope += f" AND {MESSAGE}.receipt IN ({marks(receipts)})"
        params += receipts
    return _expire_locked(now=now, scope=scope, params=params)


def leases_expire_message(*, message_id: int, now: dt.datetime | None = None) -> None:
    """Move one message's lease, if it has run out, where its expiry takes it: its review page is being shown."""
    now = now or timezone.now()
    run_out = Message.objects.filter(id=message_id, status=Message.Status.LEASED, lease_expires_at__lte=now)
    queue_id = run_out.values_list("queue_id", flat=True).first()
    if queue_id is not None:
        with transaction.atomic():
            leases_expire_ids(queue_id=queue_id, ids=[message_id], now=now)


def _expire_locked(*, now: dt.datetime, scope: str, params: list) -> dict[str, int]:
    if connection.vendor == "postgresql":
        # Lock them in id order first, as an ack does: the UPDATE's own plan may take them in
        # expiry order, and a late ack of the same messages meanwhile would then deadlock with it.
        # (When none has run out, as on most receives of a requeue queue, a probe of the index.)
        fetch(
            f"SELECT id FROM {MESSAGE} WHERE {scope} AND status = 'leased' AND lease_expires_at <= %s"
            " ORDER BY id FOR UPDATE",
            [*params, db_dt(now)],
        )
    return _expire(now=now, scope=scope, params=params)


@dataclass
class SweepResult:
    review: int = 0
    ready: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        return self.review + self.ready


# --- the sweep ------------------------------------------------------------------
# The sweep goes queue by queue, each queue's expired leases in the order of message_leased_idx
# (queue, lease_expires_at, id), at most `limit` rows a transaction. A transaction that empties a
# queue goes on to the next, so many small queues share one. No row goes to Python: SQLite's
# statements carry no ids at all, and PostgreSQL's function keeps the claimed rows' ctids in the
# server and answers with counts and where the queue's next claim starts. A message moved to review is one
# UPDATEd row: its row keeps the delivery until it leaves review (Message.history). One moved
# back to READY, whose next receive overwrites those fields, also gets its history row. The cost
# is mostly the index entries these writes make (see migrations 0002 to 0005).


def _leased(queue: str) -> str:
    """One queue's leases run out by `now`: a range of message_leased_idx."""
    return f"{MESSAGE}.status = 'leased' AND {MESSAGE}.queue_id = {queue} AND {MESSAGE}.lease_expires_at <= %(now)s"


_LEASED = _leased("%(queue)s")

# The queues with a lease run out by `now`: one probe of message_leased_idx per queue (a scalar
# subquery, so that no plan reads every leased row to find them).
_DUE_QUEUES = f"""
SELECT q.id FROM {QUEUE} AS q
WHERE (SELECT 1 FROM {MESSAGE} WHERE {_leased("q.id")} LIMIT 1) IS NOT NULL {{among}}
ORDER BY q.id
"""

# PostgreSQL: a batch of one queue is one call of queues_sweep_batch (migration 0010), which
# claims the queue's next expired leases and moves them. The claim locks them (SKIP LOCKED steps
# over rows an ack or another sweep holds) and keeps their ctids in the server; the move goes to
# them by ctid, a Tid Scan straight to the heap tuple, and the lock has kept each row as the claim
# found it. Moved rows stay in the index, dead, until vacuum: a queue's next claim starts after
# its previous one's last (lease_expires_at, id), a row comparison that is an index range, so no
# claim walks over them again. The function's settings leave each statement one plan whatever
# the statistics (a claim without sorts, the move without index or sequential scans): planned
# from statistics left stale by a bulk change, a claim sorted every leased row of the queue (a
# second a batch), and a move priced 10,000 ctids as dearer than reading the whole table.
_SWEEP_BATCH_PG = """
SELECT claimed, last_at, last_id, review, ready FROM queues_sweep_batch(
    CAST(%(queue)s AS bigint), CAST(%(now)s AS timestamptz), CAST(%(limit)s AS integer),
    CAST(%(after_at)s AS timestamptz), CAST(%(after_id)s AS bigint))"""

# SQLite: a moved row leaves the partial index at once (no dead entries to step over), so a
# queue's batch is simply its first `limit` entries, and once some of them have moved, the rest
# of the batch is still the first (limit - moved). The IMMEDIATE transaction holds the write lock
# from its first statement, so nothing else changes them in between. Each statement runs the
# subquery once, into a temporary b-tree, and the row counts are the verdict. (On PostgreSQL
# `IN (SELECT ... LIMIT n)` may claim more than n rows; here nothing else can write meanwhile.)
# The queue's settings are read first, so each statement moves one kind: in a requeue queue the
# leases bound for READY get their history and move first, then the rest go to review.
_SQLITE_BATCH = f"""
SELECT {MESSAGE}.id FROM {MESSAGE} WHERE {_LEASED}
ORDER BY {MESSAGE}.lease_expires_at, {MESSAGE}.id LIMIT %(limit)s
"""
_SQLITE_REDELIVER = f"{MESSAGE}.id IN ({_SQLITE_BATCH}) AND receive_count < %(max_receives)s"
_SQLITE_QUEUE = f"SELECT on_timeout, max_receives FROM {QUEUE} WHERE id = %(queue)s"
_SQLITE_HISTORY = f"""
INSERT INTO {DELIVERY} ({_HISTORY_COLUMNS})
SELECT {_HISTORY_VALUES} FROM {MESSAGE} WHERE {_SQLITE_REDELIVER}
"""
_SQLITE_TO_READY = f"UPDATE {MESSAGE} SET status = 'ready', available_at = lease_expires_at WHERE {_SQLITE_REDELIVER}"
_SQLITE_TO_REVIEW = f"""
UPDATE {MESSAGE} SET status = 'review', review_at = lease_expires_at, review_note = '', review_reason = %(reason)s
WHERE {MESSAGE}.id IN ({_SQLITE_BATCH})
"""


@dataclass
class _Batch:
    claimed: int = 0
    review: int = 0
    ready: int = 0


@dataclass
class _Walk:
    """Where a sweep has got to: the ids of the queues it has yet to empty, and on PostgreSQL each one's keyset."""

    now: object  # as db_dt gives it
    queues: deque[int]
    after: dict[int, dict] = field(default_factory=dict)


def _batch_sqlite(walk: _Walk, limit: int) -> _Batch:
    batch = _Batch()
    with connection.cursor() as cursor:
        while walk.queues and batch.claimed < limit:
            wanted = limit - batch.claimed
            params = {"now": walk.now, "queue": walk.queues[0], "limit": wanted}
            cursor.execute(_SQLITE_QUEUE, params)
            settings = cursor.fetchone()
            if settings is None:  # deleted since the sweep began
                walk.queues.popleft()
                continue
            on_timeout, max_receives = settings
            ready = 0
            if on_timeout == Queue.OnTimeout.REQUEUE:
                params["max_receives"] = max_receives
                cursor.execute(_SQLITE_HISTORY, params)
                cursor.execute(_SQLITE_TO_READY, params)
                ready = cursor.rowcount
                params.update(limit=wanted - ready, reason=Message.ReviewReason.MAX_RECEIVES)
            else:
                params["reason"] = Message.ReviewReason.TIMEOUT
            cursor.execute(_SQLITE_TO_REVIEW, params)
            review = cursor.rowcount
            if ready + review < wanted:
                walk.queues.popleft()  # emptied
            batch.claimed += ready + review
            batch.ready += ready
            batch.review += review
    return batch


def _batch_postgresql(walk: _Walk, limit: int) -> _Batch:
    batch = _Batch()
    while walk.queues and batch.claimed < limit:
        queue_id = walk.queues[0]
        params = {"now": walk.now, "queue": queue_id, "limit": limit - batch.claimed}
        params.update(walk.after.get(queue_id) or {"after_at": None, "after_id": None})
        [step] = fetch(_SWEEP_BATCH_PG, params, reuse_plan=True)
        if step["claimed"] < params["limit"]:
            walk.queues.popleft()  # emptied
        if step["claimed"]:
            walk.after[queue_id] = {"after_at": step["last_at"], "after_id": step["last_id"]}
            batch.claimed += step["claimed"]
            batch.review += step["review"]
            batch.ready += step["ready"]
    return batch


def leases_sweep(
    *,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    progress: Callable[[SweepResult], None] | None = None,
    queue_ids: Sequence[int] | None = None,
    max_batches: int | None = None,
) -> SweepResult:
    """LEASED -> REVIEW / READY for every lease expired at `now`, in transactions of at most `batch_size` rows.

    `queue_ids` limits it to those queues, `max_batches` to that many transactions (a review list
    catching up before it is shown does one at most, and the scheduled sweep the rest).
    """
    now = now or timezone.now()
    batch_size = batch_size or app_settings.SWEEP_BATCH
    if batch_size < 1:
        raise ValueError(f"a sweep batch must be at least 1 row, got {batch_size}")  # 0 would claim nothing, ever
    step = _batch_postgresql if connection.vendor == "postgresql" else _batch_sqlite
    params: dict = {"now": db_dt(now)}
    among = ""
    if queue_ids is not None:
        if not queue_ids:
            return SweepResult()
        among = f"AND q.id IN ({', '.join(f'%(q{i})s' for i in range(len(queue_ids)))})"
        params.update({f"q{i}": queue_id for i, queue_id in enumerate(queue_ids)})
    walk = _Walk(now=db_dt(now), queues=deque(row["id"] for row in fetch(_DUE_QUEUES.format(among=among), params)))
    result = SweepResult()
    while walk.queues and (max_batches is None or result.batches < max_batches):
        with transaction.atomic():
            batch = step(walk, batch_size)
        if not batch.claimed:
            continue  # the queues it tried had been emptied meanwhile (by another sweep, acks)
        result.review += batch.review
        result.ready += batch.ready
        result.batches += 1
        if progress:
            progress(result)
    return result
