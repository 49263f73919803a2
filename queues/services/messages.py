"""Message services: send, receive, ack, extend, release, reject.

Every transition is one guarded statement: its WHERE clause is the
precondition and the rows it returns are the verdict. Receipts are
"<message id>.<random token>", fresh on every delivery.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from queues.conf import app_settings
from queues.models import Delivery, Message, Queue, ReviewDecision
from queues.services._sql import MESSAGE, any_of, db_dt, fetch, marks, py_dt, py_json
from queues.services.leases import (
    deliveries_record,
    deliveries_record_timed_out,
    leases_expire_for_receive,
    leases_expire_ids,
)

ACKED = "acked"
ACKED_LATE = "acked_late"
STALE = "stale"
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    attributes: dict = field(default_factory=dict)
    delay_seconds: int | None = None
    dedup_id: str | None = None


@dataclass(frozen=True)
class Sent:
    id: int
    duplicate: bool = False


def message_send(*, queue: Queue, messages: Sequence[OutgoingMessage], now: dt.datetime | None = None) -> list[Sent]:
    """New messages -> READY (or delayed); a dedup_id seen within the window returns the first id."""
    now = now or timezone.now()
    try:
        return _send(queue=queue, messages=messages, now=now)
    except IntegrityError:
        # Another request inserted the same dedup_id between our check and insert:
        # once more, and the check now sees it.
        return _send(queue=queue, messages=messages, now=now)


def _send(*, queue: Queue, messages: Sequence[OutgoingMessage], now: dt.datetime) -> list[Sent]:
    dedup_ids = {m.dedup_id for m in messages if m.dedup_id}
    if not dedup_ids:
        # The common case is one statement, atomic on its own.
        return [Sent(id=message_id) for message_id in _insert(queue_id=queue.id, rows=_due(queue, messages), now=now)]
    with transaction.atomic():
        known: dict[str, int] = {}
        if dedup_ids:
            window_start = now - dt.timedelta(seconds=app_settings.DEDUP_WINDOW_SECONDS)
            # An id older than the window is free again: let the unique constraint forget it.
            Message.objects.filter(queue=queue, dedup_id__in=dedup_ids, sent_at__lte=window_start).update(dedup_id=None)
            known = dict(Message.objects.filter(queue=queue, dedup_id__in=dedup_ids).values_list("dedup_id", "id"))
        rows, slots = [], []
        first_in_batch: dict[str, int] = {}
        for message in messages:
            if message.dedup_id in known:
                slots.append(("known", message.dedup_id))
                continue
            if message.dedup_id and message.dedup_id in first_in_batch:
                slots.append(("batch", first_in_batch[message.dedup_id]))
                continue
            delay = queue.delay_seconds if message.delay_seconds is None else message.delay_seconds
            if message.dedup_id:
                first_in_batch[message.dedup_id] = len(rows)
            slots.append(("new", len(rows)))
            rows.append((message, delay))
        created = _insert(queue_id=queue.id, rows=rows, now=now)
    results = []
    for kind, ref in slots:
        if kind == "known":
            results.append(Sent(id=known[ref], duplicate=True))
        elif kind == "batch":
            results.append(Sent(id=created[ref], duplicate=True))
        else:
            results.append(Sent(id=created[ref]))
    return results


def _due(queue: Queue, messages: Sequence[OutgoingMessage]) -> list[tuple[OutgoingMessage, int]]:
    return [(m, queue.delay_seconds if m.delay_seconds is None else m.delay_seconds) for m in messages]


def _insert(*, queue_id: int, rows: list[tuple[OutgoingMessage, int]], now: dt.datetime) -> list[int]:
    """One INSERT ... RETURNING id for the batch: no model instance per message."""
    if not rows:
        return []
    sent_at = db_dt(now)
    if connection.vendor == "postgresql":
        # The batch is one JSON parameter, written by one C call: psycopg dumps a list into an
        # array parameter in Python, element by element (half of a 100-message send's CPU).
        batch = json.dumps(
            [[m.body, m.attributes or {}, m.dedup_id or None, float(delay)] for m, delay in rows],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        inserted = fetch(_INSERT_PG, [queue_id, sent_at, sent_at, batch], reuse_plan=True)
    else:
        params = []
        for message, delay in rows:
            available_at = sent_at if not delay else db_dt(now + dt.timedelta(seconds=delay))
            attributes = json.dumps(message.attributes) if message.attributes else "{}"
            params += [queue_id, message.body, attributes, message.dedup_id or None, sent_at, available_at]
        inserted = fetch(_INSERT_SQLITE.format(rows=", ".join([_ROW_SQLITE] * len(rows))), params, reuse_plan=True)
    # Both databases return the rows in the order given (Django's bulk_create relies on it too).
    return [row["id"] for row in inserted]


_INSERT_COLUMNS = """queue_id, status, body, attributes, dedup_id, sent_at, available_at,
              receive_count, consumer, review_reason, review_note, acked_from"""
# Each element of the batch is [body, attributes, dedup_id or null, delay seconds]. The
# statement and its plan are the same for any batch size.
_INSERT_PG = f"""
INSERT INTO {MESSAGE} ({_INSERT_COLUMNS})
SELECT %s, 'ready', m.item->>0, m.item->1, m.item->>2, %s,
       CAST(%s AS timestamptz) + make_interval(secs => CAST(m.item->>3 AS double precision)), 0, '', '', '', ''
FROM jsonb_array_elements(CAST(%s AS jsonb)) WITH ORDINALITY AS m(item, position)
ORDER BY m.position
RETURNING id
"""
_INSERT_SQLITE = f"INSERT INTO {MESSAGE} ({_INSERT_COLUMNS}) VALUES {{rows}} RETURNING id"
_ROW_SQLITE = "(%s, 'ready', %s, %s, %s, %s, %s, 0, '', '', '', '')"


# One statement: pick the oldest due READY messages through the partial index (in its
# order, LIMIT n) and lease them. On PostgreSQL it is a function (migration 0006: SKIP LOCKED
# lets concurrent receivers pass each other, and it keeps its plans). SQLite's
# write lock serialises receivers, and the status re-check in the outer WHERE keeps the
# statement a compare-and-swap all the same; SQLite cannot put an UPDATE in a WITH, so Python
# sorts what it returns. Each message's receipt token is drawn in the statement, one per message
# (migration 0009): holding one receipt of a batch tells nothing of the others.
_RECEIVE_SQLITE = f"""
    WITH picked AS MATERIALIZED (
        SELECT id FROM {MESSAGE}
        WHERE queue_id = %(queue)s AND status = 'ready' AND available_at <= %(now)s
        ORDER BY available_at, id
        LIMIT %(limit)s
    )
    UPDATE {MESSAGE} SET
        status = 'leased',
        receipt = CAST({MESSAGE}.id AS TEXT) || '.' || lower(hex(randomblob(8))),
        leased_at = %(now)s,
        lease_expires_at = %(expires)s,
        consumer = %(consumer)s,
        leased_by_id = %(user)s,
        receive_count = receive_count + 1
    FROM picked
    WHERE {MESSAGE}.id = picked.id AND {MESSAGE}.status = 'ready'
    RETURNING {MESSAGE}.id, body, attributes, receipt, receive_count, sent_at, available_at"""
_RECEIVE_PG = """
    SELECT id, body, attributes, receipt, receive_count, sent_at FROM queues_message_receive(
        CAST(%(queue)s AS bigint), CAST(%(now)s AS timestamptz), CAST(%(expires)s AS timestamptz),
        CAST(%(limit)s AS integer), CAST(%(consumer)s AS text), CAST(%(user)s AS bigint))
    WITH ORDINALITY AS r ORDER BY r.ordinality"""


def message_receive(
    *,
    queue: Queue,
    user=None,
    consumer: str = "",
    max_messages: int = 1,
    visibility_timeout: int | None = None,
    now: dt.datetime | None = None,
) -> list[dict]:
    """READY -> LEASED for up to `max_messages`, oldest first, each with a fresh receipt."""
    if not max_messages >= 1:
        # The API refuses it first. Below 1 SQLite reads LIMIT as "no limit", PostgreSQL refuses it.
        raise ValueError(f"max_messages must be at least 1, got {max_messages}")
    now = now or timezone.now()
    timeout = queue.visibility_timeout if visibility_timeout is None else visibility_timeout
    expires = now + dt.timedelta(seconds=timeout)
    params = {
        "now": db_dt(now),
        "expires": db_dt(expires),
        "consumer": consumer,
        "user": getattr(user, "pk", None),
        "queue": queue.id,
        "limit": max_messages,
    }
    postgres = connection.vendor == "postgresql"
    sql = _RECEIVE_PG if postgres else _RECEIVE_SQLITE
    # On PostgreSQL the rows come back in binary, which psycopg reads in C. In text, the loader
    # Django registers parsed each timestamp in Python: half of a 100-message receive's CPU.
    if queue.on_timeout == Queue.OnTimeout.REQUEUE:
        with transaction.atomic():
            # Redelivery is on time even when the sweep is late (rule 2).
            leases_expire_for_receive(queue=queue, wanted=max_messages, now=now)
            rows = fetch(sql, params, reuse_plan=True, binary=True)
    else:
        rows = fetch(sql, params, reuse_plan=True, binary=True)
    for row in rows:
        row["attributes"] = {} if row["attributes"] == "{}" else py_json(row["attributes"])
        row["sent_at"] = py_dt(row["sent_at"])
        row["lease_expires_at"] = expires
    if not postgres:
        rows.sort(key=lambda row: (row.pop("available_at"), row["id"]))
    return rows


def _receipt_ids(receipts: Sequence[str]) -> dict[str, int | None]:
    """Map each receipt to the message id it names, None when it is malformed."""
    parsed: dict[str, int | None] = {}
    for receipt in receipts:
        head, sep, tail = receipt.partition(".")
        parsed[receipt] = int(head) if sep and head.isascii() and head.isdigit() and tail and len(head) < 19 else None
    return parsed


def _classify_missing(*, queue: Queue, missing: dict[str, int | None], now: dt.datetime) -> dict[str, dict]:
    """Why a receipt changed nothing: acked earlier (ack is idempotent), stale, or not found."""
    ids = {message_id for message_id in missing.values() if message_id is not None}
    rows = {}
    if ids:
        rows = {
            row["id"]: row
            for row in Message.objects.filter(queue=queue, id__in=ids).values(
                "id", "receipt", "status", "acked_from", "lease_expires_at"
            )
        }
    verdicts = {}
    for receipt, message_id in missing.items():
        row = rows.get(message_id)
        if row is None:
            verdicts[receipt] = {"status": NOT_FOUND}
        elif row["receipt"] == receipt and row["status"] == Message.Status.ACKED:
            late = row["acked_from"] != Message.Status.LEASED
            verdicts[receipt] = {"status": ACKED_LATE if late else ACKED}
        elif row["receipt"] == receipt and row["status"] == Message.Status.LEASED:
            verdicts[receipt] = {"status": STALE, "detail": "The lease has expired."}
        elif row["receipt"] == receipt or row["receipt"] is None:  # None: released, rejected or requeued
            verdicts[receipt] = {"status": STALE, "detail": f"The message is {row['status']}, not leased."}
        else:
            detail = "The receipt is not the one of the message's current delivery: delivered again since, or mistyped."
            verdicts[receipt] = {"status": STALE, "detail": detail}
    return verdicts


def _results(receipts: Sequence[str], verdicts: dict[str, dict]) -> list[dict]:
    return [{"receipt": receipt, **verdicts[receipt]} for receipt in receipts]


# -> ACKED for the messages in the given statuses that these receipts name. On PostgreSQL a
# function (migration 0007) that keeps its plan, which goes to the primary keys.
# On SQLite, `id IN` lets the primary key find the rows (there is no index on receipt), and
# acked_from keeps the state the ack found: SET reads the row as it was.
_ACK_PG = """
    SELECT id, receipt, acked_from, consumer, receive_count, review_reason FROM queues_message_ack(
        CAST(%s AS bigint[]), CAST(%s AS bigint), CAST(%s AS text[]), CAST(%s AS text[]), CAST(%s AS timestamptz))"""
_ACK_SQLITE = f"""
    UPDATE {MESSAGE} SET
        status = 'acked',
        acked_at = %s,
        acked_from = CASE
            WHEN status = 'leased' AND lease_expires_at > %s THEN 'leased'
            WHEN status = 'leased' THEN 'expired'
            ELSE status END
    WHERE id IN ({{ids}}) AND queue_id = %s AND receipt IN ({{receipts}})
      AND CASE WHEN status = 'leased' AND lease_expires_at > %s THEN 'live' ELSE status END IN ({{statuses}})
    RETURNING id, receipt, acked_from, consumer, receive_count, review_reason"""
# What an ack finds: a lease still held ("live": leased and not run out), or, late, the message in
# review or back in READY and not yet delivered again. A lease that has run out but is not yet
# swept is moved first where its expiry takes it, as the sweep would (rule 2), so a late ack
# leaves the same records whether or not the sweep came first.
_HELD = ("live",)
_LATE = (Message.Status.REVIEW.value, Message.Status.READY.value)


def _ack(*, queue: Queue, receipts: dict[str, int], statuses: Sequence[str], now: dt.datetime) -> list[dict]:
    """ACK the messages in `statuses` that these receipts name; return the rows it changed."""
    ids, named = list(receipts.values()), list(receipts)
    if connection.vendor == "postgresql":
        return fetch(_ACK_PG, [ids, queue.id, named, list(statuses), db_dt(now)], reuse_plan=True)
    sql = _ACK_SQLITE.format(ids=marks(ids), receipts=marks(named), statuses=marks(statuses))
    return fetch(sql, [db_dt(now), db_dt(now), *ids, queue.id, *named, db_dt(now), *statuses])


def message_ack(*, queue: Queue, receipts: Sequence[str], now: dt.datetime | None = None) -> list[dict]:
    """LEASED (or, late, REVIEW / READY not yet redelivered) -> ACKED, one status per receipt."""
    now = now or timezone.now()
    parsed = _receipt_ids(receipts)
    valid = {receipt: message_id for receipt, message_id in parsed.items() if message_id is not None}
    # The common case, a lease still held: one statement.
    rows = _ack(queue=queue, receipts=valid, statuses=_HELD, now=now) if valid else []
    verdicts = {
        row["receipt"]: {"status": ACKED if row["acked_from"] == Message.Status.LEASED else ACKED_LATE} for row in rows
    }
    late = {receipt: message_id for receipt, message_id in valid.items() if receipt not in verdicts}
    if late:
        # A late ack resolves the review entry too: the state change and its
        # decision row commit together (rule 4), or neither does.
        with transaction.atomic():
            # Run out since the last sweep: to review, or back to READY with its history row.
            leases_expire_ids(queue_id=queue.id, ids=list(late.values()), now=now, receipts=list(late))
            # A lease that timed out into review kept its delivery on the row (Message.history);
            # as the message leaves review that becomes its history row.
            deliveries_record_timed_out(queue_id=queue.id, ids=list(late.values()), receipts=list(late))
            rows = _ack(queue=queue, receipts=late, statuses=_LATE, now=now)
            from_review = [row for row in rows if row["acked_from"] == Message.Status.REVIEW]
            if from_review:
                ReviewDecision.objects.bulk_create(
                    ReviewDecision(
                        queue=queue,
                        queue_name=queue.name,
                        message_id=row["id"],
                        action=ReviewDecision.Action.ACKED_LATE,
                        actor=row["consumer"] or "(unnamed consumer)",
                        note=f"acknowledged late by {row['consumer'] or 'an unnamed consumer'}",
                        review_reason=row["review_reason"],
                        receive_count=row["receive_count"],
                        created_at=now,
                    )
                    for row in from_review
                )
        verdicts.update({row["receipt"]: {"status": ACKED_LATE} for row in rows})
    missing = {receipt: message_id for receipt, message_id in parsed.items() if receipt not in verdicts}
    if missing:
        verdicts.update(_classify_missing(queue=queue, missing=missing, now=now))
    return _results(receipts, verdicts)


def _live_lease_update(
    *, queue: Queue, receipts: Sequence[str], now: dt.datetime, set_sql: str, set_params: list, done: str
) -> tuple[list[int], list[dict]]:
    """Apply `set_sql` to the messages whose receipt holds a live lease; return changed ids and results."""
    parsed = _receipt_ids(receipts)
    valid = {receipt: message_id for receipt, message_id in parsed.items() if message_id is not None}
    changed: list[int] = []
    if valid:
        ids, id_params = any_of("id", valid.values(), "bigint")
        named, receipt_params = any_of("receipt", valid, "text")
        rows = fetch(
            f"""
            UPDATE {MESSAGE} SET {set_sql}
            WHERE {ids} AND queue_id = %s AND {named} AND status = 'leased' AND lease_expires_at > %s
            RETURNING id
            """,
            [*set_params, *id_params, queue.id, *receipt_params, db_dt(now)],
        )
        changed = [row["id"] for row in rows]
    done_ids = set(changed)
    verdicts = {receipt: {"status": done} for receipt, message_id in parsed.items() if message_id in done_ids}
    missing = {receipt: message_id for receipt, message_id in parsed.items() if receipt not in verdicts}
    if missing:
        for receipt, verdict in _classify_missing(queue=queue, missing=missing, now=now).items():
            if verdict["status"] in (ACKED, ACKED_LATE):
                # Only an ack is still heard for an acked message; this call changed nothing.
                verdict = {"status": STALE, "detail": "The message has been acked."}
            verdicts[receipt] = verdict
    return changed, _results(receipts, verdicts)


def message_extend(
    *, queue: Queue, receipts: Sequence[str], visibility_timeout: int, now: dt.datetime | None = None
) -> list[dict]:
    """LEASED -> LEASED until now + visibility_timeout, for live leases only."""
    now = now or timezone.now()
    expires = now + dt.timedelta(seconds=visibility_timeout)
    _, results = _live_lease_update(
        queue=queue,
        receipts=receipts,
        now=now,
        set_sql="lease_expires_at = %s",
        set_params=[db_dt(expires)],
        done="extended",
    )
    for result in results:
        if result["status"] == "extended":
            result["lease_expires_at"] = expires
    return results


def message_release(
    *, queue: Queue, receipts: Sequence[str], delay_seconds: int = 0, now: dt.datetime | None = None
) -> list[dict]:
    """LEASED -> READY (after an optional delay); the receipt stops working."""
    now = now or timezone.now()
    with transaction.atomic():
        changed, results = _live_lease_update(
            queue=queue,
            receipts=receipts,
            now=now,
            set_sql="status = 'ready', available_at = %s, receipt = NULL, lease_expires_at = NULL",
            set_params=[db_dt(now + dt.timedelta(seconds=delay_seconds))],
            done="released",
        )
        deliveries_record(ids=changed, outcome=Delivery.Outcome.RELEASED, ended_at=now)
    return results


def message_reject(
    *, queue: Queue, receipts: Sequence[str], reason: str = "", now: dt.datetime | None = None
) -> list[dict]:
    """LEASED -> REVIEW (reason "rejected"): a poison message for an operator to judge."""
    now = now or timezone.now()
    with transaction.atomic():
        changed, results = _live_lease_update(
            queue=queue,
            receipts=receipts,
            now=now,
            set_sql=(
                "status = 'review', review_reason = 'rejected', review_note = %s, review_at = %s,"
                " receipt = NULL, lease_expires_at = NULL"
            ),
            set_params=[reason, db_dt(now)],
            done="rejected",
        )
        deliveries_record(ids=changed, outcome=Delivery.Outcome.REJECTED, ended_at=now, reason=reason)
    return results


def message_json_size(*, body: str, attributes: dict | None) -> int:
    """UTF-8 bytes a message counts against its queue's max_message_bytes."""
    size = len(body.encode("utf-8", "surrogatepass"))
    if attributes:
        size += len(json.dumps(attributes, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    return size
