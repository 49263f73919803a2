"""Unit tests of queues.services: every transition, with time controlled through `now=`."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat
from django.test.utils import CaptureQueriesContext

from queues.bench.data import expired_leases_create
from queues.models import Delivery, Message, Queue, ReviewDecision
from queues.services import (
    ACKED,
    ACKED_LATE,
    NOT_FOUND,
    STALE,
    OutgoingMessage,
    leases_sweep,
    message_ack,
    message_extend,
    message_receive,
    message_reject,
    message_release,
    message_send,
    queue_counts,
    queue_purge,
    queue_update,
    review_discard,
    review_requeue,
)
from tests.conftest import function_plans, histories, requires_postgres
from tests.factories import QueueFactory, UserFactory

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def send(queue: Queue, *bodies: str, now: dt.datetime = T0, **options) -> list[int]:
    messages = [OutgoingMessage(body=body, **options) for body in bodies]
    return [sent.id for sent in message_send(queue=queue, messages=messages, now=now)]


def receive(queue: Queue, n: int = 1, *, now: dt.datetime = T0, **options) -> list[dict]:
    return message_receive(queue=queue, max_messages=n, now=now, **options)


def statuses(results: list[dict]) -> list[str]:
    return [result["status"] for result in results]


def counts(queue: Queue, now: dt.datetime) -> dict:
    row = queue_counts(queue_ids=[queue.id], now=now)[queue.id]
    return {name: row[name] for name in ("ready", "delayed", "leased", "review")}


def snapshot(message_id: int) -> dict:
    """Every column of a message, to show that a refused call changed nothing."""
    return Message.objects.filter(id=message_id).values().get()


# --- send ---------------------------------------------------------------------


def test_message_send__ready_now_or_after_delay(queue):
    now_id, later_id = (
        send(queue, "now")[0],
        send(queue, "later", delay_seconds=10)[0],
    )
    assert Message.objects.get(id=now_id).available_at == T0
    assert Message.objects.get(id=later_id).available_at == at(10)
    assert counts(queue, T0) == {"ready": 1, "delayed": 1, "leased": 0, "review": 0}
    assert [m["id"] for m in receive(queue, 10, now=at(10))] == [now_id, later_id]


def test_message_send__no_attributes_and_a_fractional_delay_from_python_callers(queue):
    """The API always passes a dict and an int; a Python caller may pass None and a float."""
    [message_id] = [s.id for s in message_send(
        queue=queue, messages=[OutgoingMessage(body="x", attributes=None, delay_seconds=1.5)], now=T0
    )]  # fmt: skip
    row = Message.objects.get(id=message_id)
    assert (row.attributes, row.available_at) == ({}, T0 + dt.timedelta(seconds=1.5))
    assert receive(queue, 1, now=at(2))[0]["attributes"] == {}


def test_message_send__dedup_within_window_returns_first_id(queue):
    [first] = message_send(queue=queue, messages=[OutgoingMessage(body="a", dedup_id="order-1")], now=T0)
    [again] = message_send(queue=queue, messages=[OutgoingMessage(body="b", dedup_id="order-1")], now=at(60))
    assert not first.duplicate
    assert again.id == first.id
    assert again.duplicate
    assert Message.objects.filter(queue=queue).count() == 1


def test_message_send__dedup_within_one_batch_returns_first_id(queue):
    results = message_send(
        queue=queue,
        messages=[OutgoingMessage(body="a", dedup_id="x"), OutgoingMessage(body="b", dedup_id="x")],
        now=T0,
    )
    assert results[1].id == results[0].id
    assert results[1].duplicate
    assert Message.objects.filter(queue=queue).count() == 1


def test_message_send__dedup_after_window_creates_new_message(queue, settings):
    settings.WONDERQ_DEDUP_WINDOW_SECONDS = 300
    [first] = message_send(queue=queue, messages=[OutgoingMessage(body="a", dedup_id="order-1")], now=T0)
    [later] = message_send(queue=queue, messages=[OutgoingMessage(body="b", dedup_id="order-1")], now=at(301))
    assert later.id != first.id
    assert not later.duplicate
    assert Message.objects.filter(queue=queue).count() == 2
    # The id now names the new message within its own window.
    [again] = message_send(queue=queue, messages=[OutgoingMessage(body="c", dedup_id="order-1")], now=at(400))
    assert again.id == later.id


def test_message_send__dedup_is_per_queue(queue, requeue_queue):
    [a] = send(queue, "a", dedup_id="same")
    [b] = send(requeue_queue, "b", dedup_id="same")
    assert a != b


# Text that array literals, JSON and SQL quoting treat specially: a batch is sent as one JSON document
# on PostgreSQL (one array per column before), so each must come back exactly as sent, in its place.
AWKWARD = ["NULL", "null", "", '{"a": [1, 2]}', 'a"b', "back\\slash", "x,y", "{}", "  padded  ", "new\nline",
           "é ✓ 😀", "\t", "'; DROP TABLE queues_message; --", "(1, 2)", "\\N", "\\u0041", "\x01\x7f",
           "\u2028\u2029", "[]", '"quoted"']  # fmt: skip


@pytest.mark.parametrize("prepared", [True, False], ids=["server-binding", "client-binding"])
def test_message_send__batch_keeps_every_body_attribute_and_delay_in_its_place(queue, settings, prepared):
    settings.WONDERQ_PREPARED_STATEMENTS = prepared
    messages = [
        OutgoingMessage(
            body=body,
            attributes={"text": body, "n": i} if i % 3 else {},
            dedup_id=f"d{i}" if i % 2 else None,
            delay_seconds=i % 4 * 10,
        )
        for i, body in enumerate(AWKWARD)
    ]
    sent = message_send(queue=queue, messages=messages, now=T0)
    assert [s.duplicate for s in sent] == [False] * len(AWKWARD)
    rows = {row["id"]: row for row in Message.objects.filter(queue=queue).values()}
    assert [s.id for s in sent] == sorted(rows)  # ids follow the batch's order
    for message, s in zip(messages, sent, strict=True):
        row = rows[s.id]
        assert (row["body"], row["attributes"], row["dedup_id"]) == (message.body, message.attributes, message.dedup_id)
        assert row["available_at"] == at(message.delay_seconds) and row["sent_at"] == T0
    leased = receive(queue, 100, now=at(60))
    assert [m["body"] for m in leased] == [m.body for m in sorted(messages, key=lambda m: m.delay_seconds)]
    results = message_ack(
        queue=queue, receipts=[m["receipt"] for m in leased] + ["999999999.x", "nonsense"], now=at(61)
    )
    assert statuses(results) == [ACKED] * len(AWKWARD) + [NOT_FOUND, NOT_FOUND]


# --- receive ------------------------------------------------------------------


def test_message_receive__each_message_of_a_batch_gets_a_token_of_its_own(queue):
    """A receipt is `<id>.<token>`; with one token per batch, one receipt would give away the others."""
    send(queue, *[f"m{i}" for i in range(50)])

    got = receive(queue, 50)

    tokens = [m["receipt"].partition(".")[2] for m in got]
    assert len(got) == 50
    assert len(set(tokens)) == 50
    assert all(len(token) == 16 and int(token, 16) >= 0 for token in tokens)


# The statement receive sent before migration 0009, with its one token for the batch.
_RECEIVE_BEFORE_0009 = """
    SELECT id, receipt FROM queues_message_receive(
        CAST(%s AS bigint), CAST(%s AS timestamptz), CAST(%s AS timestamptz),
        CAST(%s AS integer), CAST(%s AS text), CAST(%s AS text), CAST(%s AS bigint))"""


@requires_postgres
def test_message_receive__code_from_before_0009_still_receives_with_a_token_per_message(queue):
    """A process still running the code before migration 0009 (a rolling restart) keeps
    receiving through the old signature; the token it passes is not used."""
    ids = send(queue, "a", "b", "c")

    with connection.cursor() as cursor:
        cursor.execute(_RECEIVE_BEFORE_0009, [queue.id, T0, T0 + dt.timedelta(seconds=30), 3, "same", "", None])
        rows = cursor.fetchall()

    assert sorted(row[0] for row in rows) == sorted(ids)
    tokens = [receipt.partition(".")[2] for _, receipt in rows]
    assert len(set(tokens)) == 3 and "same" not in tokens
    assert Message.objects.filter(id__in=ids, status="leased").count() == 3


def test_message_receive__leases_oldest_first_with_fresh_receipts(queue, user):
    oldest = send(queue, "a", now=at(-3))[0]
    middle = send(queue, "b", now=at(-2))[0]
    newest = send(queue, "c", now=at(-1))[0]

    got = receive(queue, 2, consumer="worker-1", user=user)

    assert [m["id"] for m in got] == [oldest, middle]
    assert [m["body"] for m in got] == ["a", "b"]
    assert all(m["receipt"].startswith(f"{m['id']}.") for m in got)
    assert len({m["receipt"] for m in got}) == 2
    assert all(m["receive_count"] == 1 for m in got)
    assert all(m["lease_expires_at"] == at(30) for m in got)
    for m in got:
        row = Message.objects.get(id=m["id"])
        assert row.status == Message.Status.LEASED
        assert row.receipt == m["receipt"]
        assert row.receive_count == 1
        assert row.consumer == "worker-1"
        assert row.leased_by_id == user.id
        assert row.leased_at == T0
        assert row.lease_expires_at == at(30)
    assert Message.objects.get(id=newest).status == Message.Status.READY


def test_message_receive__second_receive_does_not_get_leased_messages(queue):
    first, second = send(queue, "a", "b")
    got = receive(queue, 1)
    assert [m["id"] for m in got] == [first]
    assert [m["id"] for m in receive(queue, 10, now=at(1))] == [second]
    assert receive(queue, 10, now=at(2)) == []
    assert counts(queue, at(2)) == {"ready": 0, "delayed": 0, "leased": 2, "review": 0}


def test_message_receive__visibility_timeout_overrides_the_queue(queue):
    send(queue, "a")
    [m] = receive(queue, visibility_timeout=5)
    assert m["lease_expires_at"] == at(5)
    assert Message.objects.get(id=m["id"]).lease_expires_at == at(5)


@pytest.mark.parametrize("count", [0, -1])
def test_message_receive__fewer_than_one_is_refused_on_both_databases(queue, count):
    """SQLite reads a negative LIMIT as no limit: every ready message was leased."""
    send(queue, "a", "b", "c")
    with pytest.raises(ValueError, match="max_messages must be at least 1"):
        receive(queue, count)
    assert Message.objects.filter(status=Message.Status.READY).count() == 3


def test_message_receive__empty_queue_answers_nothing(queue):
    assert receive(queue, 10) == []


def test_message_receive__review_queue_never_hands_out_an_expired_lease(queue):
    [message_id] = send(queue, "a")
    receive(queue, consumer="slow")
    assert counts(queue, at(29)) == {"ready": 0, "delayed": 0, "leased": 1, "review": 0}

    # No sweep has run: the lease is expired by time alone and belongs to review.
    assert receive(queue, 10, now=at(31), consumer="fast") == []
    assert receive(queue, 10, now=at(3600), consumer="fast") == []
    assert counts(queue, at(31)) == {"ready": 0, "delayed": 0, "leased": 0, "review": 1}
    row = Message.objects.get(id=message_id)
    assert row.consumer == "slow"
    assert row.receive_count == 1


def test_message_receive__requeue_queue_redelivers_an_expired_lease_without_sweep(requeue_queue):
    [message_id] = send(requeue_queue, "a")
    [first] = receive(requeue_queue, consumer="slow")
    assert receive(requeue_queue, now=at(29)) == []
    assert counts(requeue_queue, at(31)) == {"ready": 1, "delayed": 0, "leased": 0, "review": 0}

    [second] = receive(requeue_queue, now=at(31), consumer="fast")

    assert second["id"] == message_id
    assert second["receipt"] != first["receipt"]
    assert second["receive_count"] == 2
    row = Message.objects.get(id=message_id)
    assert (row.status, row.consumer, row.receipt) == (Message.Status.LEASED, "fast", second["receipt"])
    [history] = Delivery.objects.filter(message_id=message_id)
    assert (history.outcome, history.attempt, history.consumer) == (Delivery.Outcome.EXPIRED, 1, "slow")
    assert history.ended_at == at(30)


def test_message_receive__requeue_queue_sends_to_review_after_max_receives(requeue_queue):
    [message_id] = send(requeue_queue, "a")
    receive(requeue_queue)
    receive(requeue_queue, now=at(31))  # second and last delivery (max_receives=2)
    assert counts(requeue_queue, at(62)) == {"ready": 0, "delayed": 0, "leased": 0, "review": 1}

    assert receive(requeue_queue, 10, now=at(62)) == []

    row = Message.objects.get(id=message_id)
    assert row.status == Message.Status.REVIEW
    assert row.review_reason == Message.ReviewReason.MAX_RECEIVES
    assert row.review_at == at(61)
    assert row.receive_count == 2
    assert [(d.attempt, d.outcome) for d in row.history()] == [(1, "expired"), (2, "expired")]
    # The first went back to the queue and got its row; the second stays on the message row.
    assert list(Delivery.objects.values_list("message_id", "attempt")) == [(message_id, 1)]


def test_message_receive__requeue_queue_takes_the_oldest_run_out_leases_before_later_ready_messages(requeue_queue):
    """No sweep has run. The first run-out lease has used up its deliveries: the receive steps over it
    (to review) and hands out the next two run-out leases, which have been ready since before the
    message sent at 66 s, in expiry order; a later run-out lease stays for the sweep."""
    [used_up] = send(requeue_queue, "used up")
    receive(requeue_queue)  # 1st delivery, runs out at 30
    receive(requeue_queue, now=at(31))  # 2nd and last, runs out at 61
    first, second, third = send(requeue_queue, "a", "b", "c", now=at(32))
    assert [m["id"] for m in receive(requeue_queue, now=at(33))] == [first]  # runs out at 63
    assert [m["id"] for m in receive(requeue_queue, now=at(34))] == [second]  # runs out at 64
    assert [m["id"] for m in receive(requeue_queue, now=at(35))] == [third]  # runs out at 65
    [later] = send(requeue_queue, "later", now=at(66))

    got = receive(requeue_queue, 2, now=at(70))

    assert [m["id"] for m in got] == [first, second]
    assert Message.objects.get(id=used_up).status == Message.Status.REVIEW
    # The third lease is not moved by this receive (it could not have been handed out), but the
    # counts already call it ready, as time has put it.
    row = Message.objects.get(id=third)
    assert (row.status, row.lease_expires_at) == (Message.Status.LEASED, at(65))
    assert counts(requeue_queue, at(70)) == {"ready": 2, "delayed": 0, "leased": 2, "review": 1}
    assert [m["id"] for m in receive(requeue_queue, 2, now=at(70))] == [third, later]


def test_message_receive__requeue_queue_moves_at_most_a_sweep_batch_of_run_out_leases(settings, requeue_queue):
    """After a long stop of the sweep, a receive stays one bounded transaction: it moves what it
    may hand out (here one of 1,000 run-out leases), not the whole backlog."""
    settings.WONDERQ_SWEEP_BATCH = 100
    expired_leases_create(queue=requeue_queue, count=1_000, expired_at=T0)

    [got] = receive(requeue_queue, now=at(1))

    assert got["receive_count"] == 2
    assert Delivery.objects.count() == 1  # the one redelivered; the rest were not touched
    assert Message.objects.filter(status=Message.Status.LEASED, lease_expires_at__lte=T0).count() == 999
    # With every lease used up, it steps over one sweep batch at most, moving them to review.
    Queue.objects.filter(id=requeue_queue.id).update(max_receives=1)
    requeue_queue.refresh_from_db()
    assert receive(requeue_queue, now=at(2)) == []
    assert Message.objects.filter(status=Message.Status.REVIEW).count() == 100
    assert Message.objects.filter(status=Message.Status.LEASED, lease_expires_at__lte=T0).count() == 899


def test_message_receive__requeue_queue_judges_deliveries_left_by_the_queue_row(requeue_queue):
    """The Queue object a receive is given may be a cached one (QUEUE_CACHE_SECONDS) from before
    max_receives was lowered elsewhere. What is redeliverable is the database's call, as in the
    move itself: the used-up lease goes to review and the next run-out lease is handed out."""
    Queue.objects.filter(id=requeue_queue.id).update(max_receives=3)
    requeue_queue.refresh_from_db()
    [used_up] = send(requeue_queue, "a")
    receive(requeue_queue)  # 1st delivery, runs out at 30
    receive(requeue_queue, now=at(31))  # 2nd, runs out at 61
    [next_one] = send(requeue_queue, "b", now=at(40))
    receive(requeue_queue, now=at(41))  # runs out at 71
    send(requeue_queue, "later", now=at(80))
    Queue.objects.filter(id=requeue_queue.id).update(max_receives=2)  # the object still says 3

    got = receive(requeue_queue, now=at(90))

    assert [m["id"] for m in got] == [next_one]
    assert Message.objects.get(id=used_up).status == Message.Status.REVIEW


def test_queue_purge__moves_more_run_out_leases_than_a_statement_has_placeholders(requeue_queue):
    """PostgreSQL binds at most 65,535 parameters to a statement: the history rows of the leases a
    purge moves are written with one array parameter, not one placeholder per message."""
    expired_leases_create(queue=requeue_queue, count=70_000, expired_at=T0)

    assert queue_purge(queue=requeue_queue, now=at(1)) == 70_000

    assert Delivery.objects.count() == 70_000
    assert not Message.objects.exists()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's own limit on bound parameters")
def test_queue_purge__a_sqlite_built_with_fewer_parameters_still_moves_thousands(requeue_queue):
    """SQLite binds at most 32,766 parameters a statement by default, 999 in some builds (this
    one allows 250,000): long id lists go as one JSON array instead."""
    import sqlite3

    connection.ensure_connection()
    built = connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    try:
        expired_leases_create(queue=requeue_queue, count=2_000, expired_at=T0)
        assert queue_purge(queue=requeue_queue, now=at(1)) == 2_000
        assert Delivery.objects.count() == 2_000
    finally:
        connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, built)


def test_message_receive__requeue_queue_keeps_live_leases(requeue_queue):
    send(requeue_queue, "a")
    receive(requeue_queue)
    assert receive(requeue_queue, now=at(29)) == []
    assert not Delivery.objects.exists()


# --- ack ----------------------------------------------------------------------


def test_message_ack__one_statement_for_one_live_receipt(queue, django_assert_num_queries):
    send(queue, "a")
    [m] = receive(queue)
    with django_assert_num_queries(1):
        results = message_ack(queue=queue, receipts=[m["receipt"]], now=at(1))
    assert results == [{"receipt": m["receipt"], "status": ACKED}]
    row = Message.objects.get(id=m["id"])
    assert (row.status, row.acked_at, row.acked_from) == (Message.Status.ACKED, at(1), "leased")


def test_message_ack__one_statement_for_a_batch_of_ten(queue, django_assert_num_queries):
    send(queue, *[f"m{i}" for i in range(10)])
    got = receive(queue, 10)
    receipts = [m["receipt"] for m in got]
    with django_assert_num_queries(1):
        results = message_ack(queue=queue, receipts=receipts, now=at(1))
    assert statuses(results) == [ACKED] * 10
    assert [r["receipt"] for r in results] == receipts
    assert Message.objects.filter(queue=queue, status=Message.Status.ACKED).count() == 10


@pytest.mark.parametrize("call", ["ack", "extend"])
def test_message_ack__finds_the_message_by_primary_key(queue, call):
    """There is no index on receipt: the statement must find rows by the id the receipt names,
    or every ack costs a scan of the whole queue (its leases and acked tombstones included)."""
    _seed_expired_leases(queue, 5_000)
    send(queue, "a")
    [m] = receive(queue)
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        if call == "ack":
            message_ack(queue=queue, receipts=[m["receipt"]], now=T0)
        else:
            message_extend(queue=queue, receipts=[m["receipt"]], visibility_timeout=5, now=T0)
    [(sql, params)] = statements
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {Message._meta.db_table}")
        if connection.vendor == "postgresql" and call == "ack":
            # Ack is a function (migration 0007): the plan that counts is the one inside it.
            [plan] = [p for p in function_plans(lambda: cursor.execute(sql, params)) if "WITH acked AS" in p]
            assert "queues_message_pkey" in plan and "Seq Scan" not in plan, plan
        elif connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "queues_message_pkey" in plan, plan
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(row[-1] for row in cursor.fetchall())
            assert "PRIMARY KEY" in plan, plan


def test_message_ack__writes_no_delivery_history(queue):
    send(queue, "a", "b")
    got = receive(queue, 2)
    message_ack(queue=queue, receipts=[m["receipt"] for m in got], now=at(1))
    assert not Delivery.objects.exists()
    assert not ReviewDecision.objects.exists()
    assert counts(queue, at(1)) == {"ready": 0, "delayed": 0, "leased": 0, "review": 0}


def test_message_ack__repeated_ack_answers_acked(queue):
    send(queue, "a")
    [m] = receive(queue)
    message_ack(queue=queue, receipts=[m["receipt"]], now=at(1))
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(2))) == [ACKED]
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(3600))) == [ACKED]
    assert Message.objects.get(id=m["id"]).acked_at == at(1)


def test_message_ack__stale_receipt_of_an_earlier_delivery_changes_nothing(queue):
    send(queue, "a")
    [first] = receive(queue)
    message_release(queue=queue, receipts=[first["receipt"]], now=at(1))
    [second] = receive(queue, now=at(2))
    before = snapshot(second["id"])

    [result] = message_ack(queue=queue, receipts=[first["receipt"]], now=at(3))

    assert result["status"] == STALE
    assert snapshot(second["id"]) == before
    assert statuses(message_ack(queue=queue, receipts=[second["receipt"]], now=at(4))) == [ACKED]


def test_message_ack__receipt_used_on_another_queue_is_not_acked(queue, user):
    other = QueueFactory(owner=user, name="other")
    send(queue, "a")
    [m] = receive(queue)
    before = snapshot(m["id"])

    [result] = message_ack(queue=other, receipts=[m["receipt"]], now=at(1))

    assert result["status"] in {NOT_FOUND, STALE}
    assert snapshot(m["id"]) == before


def test_message_ack__malformed_or_unknown_receipts_are_not_found(queue):
    results = message_ack(queue=queue, receipts=["nonsense", "123456.abc", ".x", "12."], now=T0)
    assert statuses(results) == [NOT_FOUND] * 4


def test_message_ack__one_bad_receipt_does_not_fail_the_others(queue):
    send(queue, "a", "b")
    got = receive(queue, 2)
    receipts = [got[0]["receipt"], "999999.nope", got[1]["receipt"]]
    assert statuses(message_ack(queue=queue, receipts=receipts, now=at(1))) == [ACKED, NOT_FOUND, ACKED]


def _late_ack_records(queue: Queue, *, sweep_first: bool, deliveries: int) -> dict:
    """Lease a message `deliveries` times, the last lease running out at 31 s, then ack it late at 40 s."""
    [message_id] = send(queue, "a")
    for n in range(deliveries):
        if n:
            Message.objects.filter(id=message_id).update(status=Message.Status.READY)
        [m] = receive(queue, consumer=f"worker-{n}")
    if sweep_first:
        leases_sweep(now=at(35))
    [result] = message_ack(queue=queue, receipts=[m["receipt"]], now=at(40))
    row = Message.objects.filter(id=message_id).values(
        "status", "acked_from", "acked_at", "review_reason", "review_at", "receive_count", "consumer"
    )[0]
    return {
        "status": result["status"],
        "message": row,
        "history": list(Delivery.objects.filter(message_id=message_id).values_list("attempt", "consumer", "outcome")),
        "decisions": list(
            ReviewDecision.objects.filter(message_id=message_id).values_list(
                "action", "actor", "note", "review_reason", "receive_count", "created_at"
            )
        ),
        "after": leases_sweep(now=at(50)).total,
    }


@pytest.mark.parametrize(
    ("on_timeout", "deliveries", "decided"),
    [("review", 1, True), ("requeue", 1, False), ("requeue", 2, True)],
    ids=["review-queue", "requeue-queue", "requeue-queue-max-receives-used"],
)
def test_message_ack__a_late_ack_leaves_the_same_records_whether_or_not_the_sweep_came_first(
    user, on_timeout, deliveries, decided
):
    """Rule 2: a run-out lease is where time put it, swept or not; so a late ack of it is recorded as after a sweep."""
    swept, unswept = (
        QueueFactory(owner=user, name=name, on_timeout=on_timeout, max_receives=2) for name in ("swept", "unswept")
    )

    after_sweep = _late_ack_records(swept, sweep_first=True, deliveries=deliveries)
    before_sweep = _late_ack_records(unswept, sweep_first=False, deliveries=deliveries)

    assert before_sweep == after_sweep
    assert before_sweep["status"] == ACKED_LATE
    assert before_sweep["history"][-1] == (deliveries, f"worker-{deliveries - 1}", "expired")
    last = f"worker-{deliveries - 1}"
    expected = [("acked_late", last, f"acknowledged late by {last}")] if decided else []
    assert [decision[:3] for decision in before_sweep["decisions"]] == expected
    assert before_sweep["after"] == 0


@requires_postgres
def test_message_ack__the_function_still_acks_any_lease_for_code_from_before_0011(queue):
    """A process still on the code before migration 0011 asks for `leased` and gets what it got: run out or not."""
    send(queue, "a", "b")
    live_lease, run_out = receive(queue, 2)
    Message.objects.filter(id=run_out["id"]).update(lease_expires_at=at(10))
    ack = "SELECT id, acked_from FROM queues_message_ack(%s, %s, %s, %s, %s)"
    ids, receipts = [live_lease["id"], run_out["id"]], [live_lease["receipt"], run_out["receipt"]]
    with connection.cursor() as cursor:
        cursor.execute(ack, [ids, queue.id, receipts, ["live"], at(20)])
        assert cursor.fetchall() == [(live_lease["id"], "leased")]
        cursor.execute(ack, [ids, queue.id, receipts, ["leased"], at(20)])
        assert cursor.fetchall() == [(run_out["id"], "expired")]


def test_message_ack__late_ack_of_a_review_item_resolves_it(queue):
    send(queue, "a")
    [m] = receive(queue, consumer="slow-worker")
    assert leases_sweep(now=at(31)).review == 1

    [result] = message_ack(queue=queue, receipts=[m["receipt"]], now=at(40))

    assert result["status"] == ACKED_LATE
    row = Message.objects.get(id=m["id"])
    assert (row.status, row.acked_from, row.acked_at) == (Message.Status.ACKED, "review", at(40))
    [decision] = ReviewDecision.objects.all()
    assert decision.action == ReviewDecision.Action.ACKED_LATE
    assert decision.message_id == m["id"]
    assert decision.queue_id == queue.id
    assert decision.actor == "slow-worker"
    assert "slow-worker" in decision.note
    assert decision.review_reason == Message.ReviewReason.TIMEOUT
    assert decision.created_at == at(40)
    assert counts(queue, at(40))["review"] == 0
    # A retried late ack answers the same and logs nothing more.
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(41))) == [ACKED_LATE]
    assert ReviewDecision.objects.count() == 1


def test_message_ack__late_ack_of_a_requeued_message_not_yet_redelivered(requeue_queue):
    send(requeue_queue, "a")
    [m] = receive(requeue_queue)
    assert leases_sweep(now=at(31)).ready == 1
    assert statuses(message_ack(queue=requeue_queue, receipts=[m["receipt"]], now=at(32))) == [ACKED_LATE]
    assert Message.objects.get(id=m["id"]).status == Message.Status.ACKED
    assert receive(requeue_queue, now=at(33)) == []


def test_message_ack__late_ack_after_redelivery_is_stale(requeue_queue):
    send(requeue_queue, "a")
    [first] = receive(requeue_queue)
    leases_sweep(now=at(31))
    [second] = receive(requeue_queue, now=at(32))
    before = snapshot(second["id"])

    assert statuses(message_ack(queue=requeue_queue, receipts=[first["receipt"]], now=at(33))) == [STALE]

    assert snapshot(second["id"]) == before
    assert statuses(message_ack(queue=requeue_queue, receipts=[second["receipt"]], now=at(34))) == [ACKED]


def test_message_ack__late_ack_after_operator_requeue_is_stale(queue):
    send(queue, "a")
    [m] = receive(queue)
    leases_sweep(now=at(31))
    review_requeue(queue=queue, ids=[m["id"]], actor="op", now=at(40))
    before = snapshot(m["id"])
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(41))) == [STALE]
    assert snapshot(m["id"]) == before


# --- extend, release, reject ---------------------------------------------------


def test_message_extend__one_statement_and_the_lease_runs_longer(queue, django_assert_num_queries):
    send(queue, "a")
    [m] = receive(queue)
    with django_assert_num_queries(1):
        [result] = message_extend(queue=queue, receipts=[m["receipt"]], visibility_timeout=60, now=at(20))
    assert result["status"] == "extended"
    assert result["lease_expires_at"] == at(80)
    assert Message.objects.get(id=m["id"]).lease_expires_at == at(80)
    assert leases_sweep(now=at(60)).total == 0
    assert counts(queue, at(60))["leased"] == 1
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(70))) == [ACKED]


def test_message_extend__expired_lease_is_stale(queue):
    send(queue, "a")
    [m] = receive(queue)
    before = snapshot(m["id"])
    [result] = message_extend(queue=queue, receipts=[m["receipt"]], visibility_timeout=60, now=at(30))
    assert result["status"] == STALE
    assert snapshot(m["id"]) == before


def test_message_release__back_to_ready_after_the_delay(queue, user):
    [message_id] = send(queue, "a")
    [first] = receive(queue, consumer="w1", user=user)

    [result] = message_release(queue=queue, receipts=[first["receipt"]], delay_seconds=10, now=at(5))

    assert result["status"] == "released"
    row = Message.objects.get(id=message_id)
    assert (row.status, row.available_at, row.receipt) == (Message.Status.READY, at(15), None)
    assert counts(queue, at(5)) == {"ready": 0, "delayed": 1, "leased": 0, "review": 0}
    assert receive(queue, now=at(14)) == []
    [second] = receive(queue, now=at(15))
    assert second["receive_count"] == 2
    assert second["receipt"] != first["receipt"]
    [history] = Delivery.objects.filter(message_id=message_id)
    assert (history.outcome, history.attempt, history.consumer) == (Delivery.Outcome.RELEASED, 1, "w1")
    assert (history.leased_by_id, history.leased_at, history.ended_at) == (user.id, T0, at(5))


def test_message_release__receipt_stops_working(queue):
    send(queue, "a")
    [m] = receive(queue)
    message_release(queue=queue, receipts=[m["receipt"]], now=at(1))
    assert statuses(message_release(queue=queue, receipts=[m["receipt"]], now=at(2))) == [STALE]
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(2))) == [STALE]
    assert Delivery.objects.count() == 1


def test_message_release__expired_lease_is_stale(queue):
    send(queue, "a")
    [m] = receive(queue)
    before = snapshot(m["id"])
    assert statuses(message_release(queue=queue, receipts=[m["receipt"]], now=at(31))) == [STALE]
    assert snapshot(m["id"]) == before
    assert not Delivery.objects.exists()


def test_message_reject__to_review_with_the_consumers_note(queue):
    [message_id] = send(queue, "a")
    [m] = receive(queue, consumer="w1")

    [result] = message_reject(queue=queue, receipts=[m["receipt"]], reason="cannot parse body", now=at(3))

    assert result["status"] == "rejected"
    row = Message.objects.get(id=message_id)
    assert row.status == Message.Status.REVIEW
    assert row.review_reason == Message.ReviewReason.REJECTED
    assert row.review_note == "cannot parse body"
    assert row.review_at == at(3)
    assert counts(queue, at(3)) == {"ready": 0, "delayed": 0, "leased": 0, "review": 1}
    [history] = Delivery.objects.filter(message_id=message_id)
    assert (history.outcome, history.reason, history.consumer) == (Delivery.Outcome.REJECTED, "cannot parse body", "w1")
    # The consumer gave the message up: its receipt no longer acks it.
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(4))) == [STALE]
    assert Message.objects.get(id=message_id).status == Message.Status.REVIEW


def test_message_reject__expired_lease_is_stale(queue):
    send(queue, "a")
    [m] = receive(queue)
    before = snapshot(m["id"])
    assert statuses(message_reject(queue=queue, receipts=[m["receipt"]], reason="x", now=at(30))) == [STALE]
    assert snapshot(m["id"]) == before


# --- sweep --------------------------------------------------------------------


def test_leases_sweep__review_queue_to_review_with_reason_timeout(queue, user):
    [message_id] = send(queue, "a")
    receive(queue, consumer="w1", user=user)

    result = leases_sweep(now=at(31))

    assert (result.review, result.ready, result.batches) == (1, 0, 1)
    row = Message.objects.get(id=message_id)
    assert row.status == Message.Status.REVIEW
    assert row.review_reason == Message.ReviewReason.TIMEOUT
    assert row.review_at == at(30)
    assert (row.consumer, row.leased_by_id, row.receive_count) == ("w1", user.id, 1)
    [history] = row.history()
    assert (history.outcome, history.attempt, history.ended_at) == (Delivery.Outcome.EXPIRED, 1, at(30))
    assert (history.consumer, history.leased_by_id, history.leased_at) == ("w1", user.id, T0)
    assert not Delivery.objects.exists()  # written when the message leaves review


def test_leases_sweep__requeue_queue_to_ready_then_review_after_max_receives(requeue_queue):
    [message_id] = send(requeue_queue, "a")
    receive(requeue_queue)
    assert (leases_sweep(now=at(31)).ready, Message.objects.get(id=message_id).status) == (1, "ready")
    assert Message.objects.get(id=message_id).available_at == at(30)

    receive(requeue_queue, now=at(32))
    result = leases_sweep(now=at(63))

    assert (result.review, result.ready) == (1, 0)
    row = Message.objects.get(id=message_id)
    assert (row.status, row.review_reason, row.review_at) == ("review", Message.ReviewReason.MAX_RECEIVES, at(62))
    assert [(d.attempt, d.outcome, d.ended_at) for d in row.history()] == [
        (1, "expired", at(30)),
        (2, "expired", at(62)),
    ]


def test_leases_sweep__is_idempotent(queue, requeue_queue):
    send(queue, "a", "b")
    send(requeue_queue, "c")
    receive(queue, 2)
    receive(requeue_queue)
    first = leases_sweep(now=at(31))
    assert (first.review, first.ready) == (2, 1)

    second = leases_sweep(now=at(31))

    assert (second.review, second.ready, second.batches) == (0, 0, 0)
    assert leases_sweep(now=at(40)).total == 0
    assert sum(map(len, histories().values())) == 3


def test_leases_sweep__leaves_live_leases_alone(queue):
    send(queue, "short", "long")
    [short] = receive(queue, visibility_timeout=10)
    [long] = receive(queue, visibility_timeout=60)
    before = snapshot(long["id"])

    result = leases_sweep(now=at(30))

    assert result.review == 1
    assert Message.objects.get(id=short["id"]).status == Message.Status.REVIEW
    assert snapshot(long["id"]) == before
    # A lease expiring exactly at `now` has run out.
    assert leases_sweep(now=at(60)).review == 1


def test_leases_sweep__works_through_every_queue_in_batches(queue, requeue_queue):
    send(queue, *[f"m{i}" for i in range(600)])
    send(requeue_queue, *[f"r{i}" for i in range(400)])
    for offset in range(0, 600, 100):
        receive(queue, 100, now=at(offset / 100))
    for offset in range(0, 400, 100):
        receive(requeue_queue, 100, now=at(offset / 100))
    progress = []

    result = leases_sweep(now=at(60), batch_size=100, progress=lambda r: progress.append(r.total))

    assert (result.review, result.ready, result.total) == (600, 400, 1000)
    assert result.batches == 10
    assert progress == list(range(100, 1001, 100))
    assert not Message.objects.filter(status=Message.Status.LEASED).exists()
    assert sum(map(len, histories().values())) == 1000
    assert Delivery.objects.count() == 400  # the ones back in READY; review keeps its own on the message row


def _seed_expired_leases(queue: Queue, n: int) -> None:
    """n LEASED messages whose leases ran out at T0 + 1 s, with receipts "<id>.seed" as receive makes them.

    Inserted by one INSERT ... SELECT: building 100,000 model instances would take longer than the sweep.
    """
    when = connection.ops.adapt_datetimefield_value(T0)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Message._meta.db_table} (queue_id, status, body, attributes, sent_at, available_at,
                receive_count, consumer, review_reason, review_note, acked_from)
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s)
            SELECT %s, 'ready', 'm' || n, '{{}}', %s, %s, 0, '', '', '', '' FROM seq
            """,
            [n, queue.id, when, when],
        )
    Message.objects.filter(queue=queue).update(
        status=Message.Status.LEASED,
        receipt=Concat(Cast("id", CharField()), Value(".seed")),
        receive_count=1,
        consumer="seed",
        leased_at=T0,
        lease_expires_at=at(1),
    )


@pytest.mark.slow
def test_leases_sweep__statements_bounded_by_batches_not_rows(queue):
    _seed_expired_leases(queue, 100_000)

    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        result = leases_sweep(now=at(2), batch_size=10_000)
    elapsed = time.perf_counter() - started

    assert (result.review, result.batches) == (100_000, 10)
    # A handful of statements a batch (select, update, savepoints), never one per row.
    assert len(captured) <= 10 * result.batches, [q["sql"][:80] for q in captured]
    assert Message.objects.filter(status=Message.Status.REVIEW).count() == 100_000
    assert not Delivery.objects.exists()  # into review, each delivery stays on its message row
    print(f"\nswept 100,000 expired leases in {elapsed:.2f}s, {len(captured)} statements on {connection.vendor}")


# --- review decisions -----------------------------------------------------------


def _into_review(queue: Queue, n: int) -> list[int]:
    ids = send(queue, *[f"m{i}" for i in range(n)])
    receive(queue, n, consumer="w")
    leases_sweep(now=at(31))
    return ids


def test_review_requeue__moves_only_items_still_in_review_and_logs_decisions(queue):
    operator = UserFactory(staff=True)
    in_review = _into_review(queue, 2)
    [leased_id] = send(queue, "leased", now=at(32))
    receive(queue, now=at(32))
    [ready_id] = send(queue, "ready", now=at(32))

    moved = review_requeue(
        queue=queue,
        ids=[*in_review, leased_id, ready_id, 999_999],
        operator=operator,
        delay_seconds=5,
        note="fixed the parser",
        now=at(40),
    )

    assert sorted(moved) == sorted(in_review)
    for message_id in in_review:
        row = Message.objects.get(id=message_id)
        assert (row.status, row.available_at, row.receipt) == (Message.Status.READY, at(45), None)
    assert Message.objects.get(id=leased_id).status == Message.Status.LEASED
    assert Message.objects.get(id=ready_id).available_at == at(32)
    decisions = ReviewDecision.objects.order_by("message_id")
    assert [d.message_id for d in decisions] == sorted(in_review)
    for decision in decisions:
        assert decision.action == ReviewDecision.Action.REQUEUED
        assert (decision.operator_id, decision.actor) == (operator.id, operator.get_username())
        assert (decision.note, decision.delay_seconds, decision.created_at) == ("fixed the parser", 5, at(40))
        assert (decision.review_reason, decision.receive_count) == ("timeout", 1)
    # Once out of review, a second decision is no decision.
    assert review_requeue(queue=queue, ids=in_review, operator=operator, now=at(41)) == []
    assert review_discard(queue=queue, ids=in_review, operator=operator, now=at(41)) == []
    assert ReviewDecision.objects.count() == 2


def test_review_requeue__redelivers_with_a_fresh_receipt(queue):
    [message_id] = _into_review(queue, 1)
    review_requeue(queue=queue, ids=[message_id], actor="op", now=at(40))
    [m] = receive(queue, now=at(41))
    assert (m["id"], m["receive_count"]) == (message_id, 2)


def test_review_requeue__ignores_another_queues_items(queue, requeue_queue):
    [message_id] = _into_review(queue, 1)
    assert review_requeue(queue=requeue_queue, ids=[message_id], actor="op", now=at(40)) == []
    assert Message.objects.get(id=message_id).status == Message.Status.REVIEW
    assert not ReviewDecision.objects.exists()


def test_review_discard__deletes_the_message_and_keeps_the_decision(queue):
    operator = UserFactory(staff=True)
    [message_id, other_id] = _into_review(queue, 2)

    assert review_discard(queue=queue, ids=[message_id], operator=operator, note="spam", now=at(40)) == [message_id]

    assert not Message.objects.filter(id=message_id).exists()
    assert Message.objects.get(id=other_id).status == Message.Status.REVIEW
    [decision] = ReviewDecision.objects.all()
    assert (decision.message_id, decision.action, decision.note) == (message_id, "discarded", "spam")
    assert (decision.operator_id, decision.actor, decision.queue_name) == (operator.id, operator.username, "jobs")
    # The history of its deliveries stays readable too.
    assert Delivery.objects.filter(message_id=message_id).count() == 1


def test_review_discard__ignores_items_not_in_review(queue):
    [leased_id, ready_id] = send(queue, "a", "b")
    receive(queue)
    assert review_discard(queue=queue, ids=[leased_id, ready_id], actor="op", now=at(1)) == []
    assert Message.objects.filter(queue=queue).count() == 2
    assert not ReviewDecision.objects.exists()


def test_review_discard__late_ack_first_wins(queue):
    [message_id] = send(queue, "a")
    [m] = receive(queue, consumer="w")
    leases_sweep(now=at(31))
    assert statuses(message_ack(queue=queue, receipts=[m["receipt"]], now=at(35))) == [ACKED_LATE]

    assert review_discard(queue=queue, ids=[message_id], actor="op", now=at(36)) == []

    assert Message.objects.get(id=message_id).status == Message.Status.ACKED
    assert list(ReviewDecision.objects.values_list("action", flat=True)) == ["acked_late"]


# --- queues ---------------------------------------------------------------------------------


def test_queue_update__one_statement_changes_only_the_fields_given(queue, django_assert_num_queries):
    with django_assert_num_queries(1):
        updated = queue_update(queue=queue, visibility_timeout=99, now=T0)

    stored = Queue.objects.get(pk=queue.pk)
    assert updated.visibility_timeout == stored.visibility_timeout == 99
    assert updated.updated_at == stored.updated_at == T0
    assert stored.max_receives == queue.max_receives


def test_queue_update__queue_deleted_meanwhile_raises_does_not_exist(queue):
    """Found by the fuzzer: PATCH racing DELETE was a 500 (save() found no row to update)."""
    Queue.objects.filter(pk=queue.pk).delete()

    with pytest.raises(Queue.DoesNotExist):
        queue_update(queue=queue, visibility_timeout=99)
