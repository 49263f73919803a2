"""The expiry sweep (`leases_sweep`): where each expired lease goes, how batches split, what a batch costs."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from queues.bench.data import expired_leases_create
from queues.models import Delivery, Message, Queue
from queues.services import (
    OutgoingMessage,
    leases_sweep,
    message_ack,
    message_receive,
    message_reject,
    message_send,
    review_discard,
    review_requeue,
)
from queues.services import leases as leases_module
from tests.conftest import api_client_for, function_plans, histories, requires_postgres
from tests.factories import QueueFactory, UserFactory

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def lease(queue: Queue, n: int, *, now: dt.datetime, **options) -> list[int]:
    """Send n messages and receive them at `now`; returns their ids."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(n)], now=now)
    got = message_receive(queue=queue, max_messages=n, now=now, **options)
    assert len(got) == n
    return [m["id"] for m in got]


def expired_history() -> Counter:
    return Counter(
        {
            message_id: sum(d.outcome == Delivery.Outcome.EXPIRED for d in history)
            for message_id, history in histories().items()
            if history
        }
    )


@pytest.fixture
def mixed(queue, requeue_queue, user):
    """Leases of both kinds of queue whose expiries interleave, all run out by at(100).

    requeue_queue (max_receives=2): `second` is on its second delivery (-> REVIEW, max_receives),
    `first` on its first (-> READY). queue (review): `timed_out` (-> REVIEW, timeout).
    """
    second = lease(requeue_queue, 2, now=T0, consumer="r1", user=user)
    assert leases_sweep(now=at(31)).ready == 2  # back to READY, available since at(30)
    assert len(message_receive(queue=requeue_queue, max_messages=2, now=at(40), consumer="r2", user=user)) == 2
    timed_out = lease(queue, 1, now=at(40.5), consumer="w1", user=user)  # expires at(70.5)
    first = lease(requeue_queue, 2, now=at(41), consumer="r3", user=user)  # expires at(71)
    timed_out += lease(queue, 1, now=at(41.5), consumer="w2", user=user)  # expires at(71.5)
    return {"second": second, "first": first, "timed_out": timed_out}


def test_leases_sweep__mixed_batch_each_lease_to_its_place_with_its_history(mixed, queue, user):
    result = leases_sweep(now=at(100))

    assert (result.review, result.ready, result.batches) == (4, 2, 1)
    rows = {m.id: m for m in Message.objects.all()}
    for message_id in mixed["second"]:
        row = rows[message_id]
        assert (row.status, row.review_reason, row.review_at) == ("review", "max_receives", at(70))
    for message_id in mixed["first"]:
        row = rows[message_id]
        assert (row.status, row.available_at, row.review_reason, row.review_at) == ("ready", at(71), "", None)
    for message_id, expiry in zip(mixed["timed_out"], (at(70.5), at(71.5)), strict=True):
        row = rows[message_id]
        assert (row.status, row.review_reason, row.review_at, row.review_note) == ("review", "timeout", expiry, "")
    # Every delivery that ran out is in the history once, copied from the lease.
    last = {message_id: history[-1] for message_id, history in histories().items() if history}
    once = dict.fromkeys(mixed["first"] + mixed["timed_out"], 1)
    assert expired_history() == {**dict.fromkeys(mixed["second"], 2), **once}
    for message_id in mixed["second"]:
        d = last[message_id]
        assert (d.attempt, d.consumer, d.leased_by_id, d.leased_at, d.ended_at) == (2, "r2", user.id, at(40), at(70))
    d = last[mixed["timed_out"][1]]
    assert (d.queue_id, d.consumer, d.leased_at, d.ended_at, d.reason) == (queue.id, "w2", at(41.5), at(71.5), "")


def test_leases_sweep__history_rows_only_for_leases_back_in_the_queue(mixed):
    """Into READY the next receive overwrites the lease, so its history row is written now; into
    review the message row keeps it, and the sweep writes nothing more."""
    leases_sweep(now=at(100))

    written = set(Delivery.objects.values_list("message_id", "attempt"))
    assert written == {(i, 1) for i in mixed["second"] + mixed["first"]}


def test_review_requeue__writes_the_timed_out_delivery_once_and_history_goes_on(queue, user):
    [message_id] = lease(queue, 1, now=T0, consumer="w1", user=user)
    leases_sweep(now=at(30))
    assert not Delivery.objects.exists()

    review_requeue(queue=queue, ids=[message_id], now=at(40))
    review_requeue(queue=queue, ids=[message_id], now=at(41))  # no longer in review: nothing more

    [row] = Delivery.objects.all()
    assert (row.message_id, row.attempt, row.consumer, row.leased_by_id) == (message_id, 1, "w1", user.id)
    assert (row.leased_at, row.ended_at, row.outcome) == (T0, at(30), "expired")
    # Redelivered and timed out again: the first delivery is a row, the second is on the message.
    assert [m["id"] for m in message_receive(queue=queue, max_messages=5, now=at(50), consumer="w2")] == [message_id]
    leases_sweep(now=at(80))
    shown = histories()[message_id]
    assert [(d.attempt, d.consumer, d.leased_at, d.ended_at) for d in shown] == [
        (1, "w1", T0, at(30)),
        (2, "w2", at(50), at(80)),
    ]
    assert [d.pk is None for d in shown] == [False, True]

    review_requeue(queue=queue, ids=[message_id], now=at(90))
    assert list(Delivery.objects.order_by("attempt").values_list("attempt", "consumer")) == [(1, "w1"), (2, "w2")]
    assert Message.objects.get(id=message_id).history() == list(Delivery.objects.order_by("attempt"))


def test_review_requeue__a_timeout_already_written_at_expiry_is_not_written_again(queue):
    """Messages swept into review by earlier versions have their row: neither shown nor written twice."""
    [message_id] = lease(queue, 1, now=T0)
    leases_sweep(now=at(30))
    leases_module.deliveries_record(ids=[message_id], outcome=Delivery.Outcome.EXPIRED, ended_at=None)
    assert expired_history() == {message_id: 1}

    review_requeue(queue=queue, ids=[message_id], now=at(40))

    assert Delivery.objects.count() == 1


def test_leaving_review_by_late_ack_or_discard__the_timed_out_delivery_becomes_a_row(queue):
    message_send(queue=queue, messages=[OutgoingMessage(body=b) for b in ("acked late", "discarded")], now=T0)
    late, gone = message_receive(queue=queue, max_messages=2, now=T0, consumer="w1")
    leases_sweep(now=at(30))
    assert not Delivery.objects.exists()
    stale = f"{late['id']}.0000000000000000"
    assert message_ack(queue=queue, receipts=[stale], now=at(39))[0]["status"] == "stale"
    assert not Delivery.objects.exists()  # a stale receipt changes nothing

    assert message_ack(queue=queue, receipts=[late["receipt"]], now=at(40))[0]["status"] == "acked_late"
    review_discard(queue=queue, ids=[gone["id"]], actor="op", now=at(41))

    rows = Delivery.objects.order_by("message_id").values_list(
        "message_id", "attempt", "consumer", "ended_at", "outcome"
    )
    assert list(rows) == [(late["id"], 1, "w1", at(30), "expired"), (gone["id"], 1, "w1", at(30), "expired")]


def test_history__a_rejected_message_shows_its_rejection_alone(queue):
    message_send(queue=queue, messages=[OutgoingMessage(body="poison")], now=T0)
    [got] = message_receive(queue=queue, max_messages=1, now=T0, consumer="w1")
    message_reject(queue=queue, receipts=[got["receipt"]], reason="bad input", now=at(1))

    [shown] = histories()[got["id"]]
    assert (shown.pk is not None, shown.outcome, shown.reason, shown.consumer) == (True, "rejected", "bad input", "w1")


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_leases_sweep__batches_of_mixed_kinds_move_each_lease_once(mixed, batch_size):
    progress: list[int] = []

    result = leases_sweep(now=at(100), batch_size=batch_size, progress=lambda r: progress.append(r.total))

    assert (result.review, result.ready) == (4, 2)
    assert result.batches == -(-6 // batch_size)
    assert progress == [min(6, n * batch_size) for n in range(1, result.batches + 1)]
    assert Counter(Message.objects.values_list("status", flat=True)) == {"review": 4, "ready": 2}
    assert set(expired_history().values()) <= {1, 2} and sum(expired_history().values()) == 8


def test_leases_sweep__only_the_queues_and_batches_asked_for(mixed, queue, requeue_queue):
    assert leases_sweep(now=at(100), queue_ids=[]).total == 0
    one = leases_sweep(now=at(100), queue_ids=[queue.id], batch_size=1, max_batches=1)
    assert (one.review, one.ready, one.batches) == (1, 0, 1)
    rest = leases_sweep(now=at(100), queue_ids=[queue.id], batch_size=1)
    assert (rest.review, rest.batches) == (1, 1)
    assert Message.objects.filter(queue=requeue_queue, status="leased").count() == 4
    assert leases_sweep(now=at(100)).total == 4


def test_leases_sweep__equal_expiry_times_split_across_batches(queue):
    # One receive leases all 25 with the same expiry: the keyset must go on by id, not by time.
    ids = lease(queue, 25, now=T0)
    progress: list[int] = []

    result = leases_sweep(now=at(30), batch_size=10, progress=lambda r: progress.append(r.total))

    assert (result.review, result.batches, progress) == (25, 3, [10, 20, 25])
    assert Message.objects.filter(id__in=ids, status="review", review_at=at(30)).count() == 25
    assert expired_history() == dict.fromkeys(ids, 1)


def test_leases_sweep__only_what_has_run_out_by_now(queue):
    early = lease(queue, 3, now=T0)  # expires at(30)
    late = lease(queue, 3, now=at(1))  # expires at(31)

    assert leases_sweep(now=at(30), batch_size=2).review == 3

    assert set(Message.objects.filter(status="leased").values_list("id", flat=True)) == set(late)
    assert set(expired_history()) == set(early)


def test_leases_sweep__statements_a_batch_are_few_and_do_not_grow_with_it(queue):
    """Every statement's text is the same size whatever the batch: no id lists in the SQL.

    (On PostgreSQL the claimed rows' ctids go back to the move as one bound value, not as SQL text.)
    """
    expired_leases_create(queue=queue, count=3_000, expired_at=T0)

    with CaptureQueriesContext(connection) as captured:
        result = leases_sweep(now=at(1), batch_size=1_000)

    assert (result.review, result.batches) == (3_000, 3)
    assert len(captured) <= 8 * result.batches, [q["sql"][:80] for q in captured]
    assert max(len(q["sql"]) for q in captured) < 4_000
    assert Message.objects.filter(queue=queue, status="review").count() == 3_000
    # Into review, the message row keeps the delivery: no history row is written for it.
    assert not Delivery.objects.exists()
    assert expired_history() == dict.fromkeys(Message.objects.values_list("id", flat=True), 1)


def test_leases_sweep__queues_without_expired_leases_cost_no_statement(queue, user):
    """The sweep finds the queues with a lease run out in one statement and visits only those."""
    idle = [QueueFactory(owner=user) for _ in range(20)]
    for other in idle:
        lease(other, 1, now=at(10))  # still running at(30)
    due = lease(queue, 3, now=T0)

    with CaptureQueriesContext(connection) as captured:
        result = leases_sweep(now=at(30))

    assert (result.review, result.batches) == (3, 1)
    assert len(captured) <= 8, [q["sql"][:80] for q in captured]
    assert set(Message.objects.filter(status="review").values_list("id", flat=True)) == set(due)
    assert Message.objects.filter(status="leased").count() == len(idle)


def test_leases_sweep__finding_the_due_queues_probes_the_leased_index(queue):
    """One index probe per queue, never a read of every leased row, whatever the statistics say."""
    expired_leases_create(queue=queue, count=2_000, expired_at=T0)
    with connection.cursor() as cursor:
        explain = "EXPLAIN" if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN"
        cursor.execute(f"{explain} {leases_module._DUE_QUEUES.format(among='')}", {"now": leases_module.db_dt(at(1))})
        plan = "\n".join(str(row[-1] if connection.vendor == "sqlite" else row[0]) for row in cursor.fetchall())

    assert "message_leased_idx" in plan, plan
    assert "Seq Scan on queues_message" not in plan and "SCAN queues_message" not in plan, plan
    assert "Hash" not in plan, plan


def test_leases_sweep__a_queue_deleted_during_the_sweep_is_stepped_over(queue, user):
    later = QueueFactory(owner=user)
    kept = lease(queue, 2, now=T0)
    lease(later, 1, now=T0)
    assert queue.id < later.id  # the sweep goes in queue order: `later` is still to come

    def delete_later(result) -> None:
        if result.batches == 1:
            Queue.objects.filter(id=later.id).delete()

    result = leases_sweep(now=at(30), batch_size=1, progress=delete_later)

    assert result.review == 2
    assert set(Message.objects.filter(status="review").values_list("id", flat=True)) == set(kept)
    assert not Message.objects.filter(queue_id=later.id).exists()


@requires_postgres
def test_leases_sweep__claims_in_index_order_and_moves_by_ctid_under_stale_statistics(queue):
    """The sweep's function (migration 0010) plans its claim and move once, here on statistics
    that say the table is empty while 2,000 leases have run out: the claim must still come off
    message_leased_idx in key order, never a sort of every leased row, and the move go by ctid
    straight to the claimed rows, never a scan of the table or of the queue's messages."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")  # empty: the worst statistics for what follows
    expired_leases_create(queue=queue, count=2_000, expired_at=T0)

    results = []
    plans = function_plans(lambda: results.append(leases_sweep(now=at(1), batch_size=500)))

    assert results[0].review == 2_000 and results[0].batches == 4
    claims = [plan for plan in plans if "WITH batch AS MATERIALIZED" in plan]
    moves = [plan for plan in plans if "WITH moved AS" in plan]
    assert len(claims) == 5 and len(moves) == 4  # the fifth claim finds the queue empty
    for claim in claims:
        assert "Index Scan using message_leased_idx" in claim and "Sort" not in claim, claim
    for move in moves:
        assert "Tid Scan on queues_message" in move and "Seq Scan" not in move, move
        assert "Index Scan" not in move and "Bitmap" not in move, move


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_leases_sweep__steps_over_a_row_another_transaction_holds(user):
    """SKIP LOCKED: a row an ack (say) holds is left for a later sweep, never waited for nor moved twice."""
    queue = QueueFactory(owner=user)
    ids = lease(queue, 5, now=T0)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                list(Message.objects.select_for_update().filter(id=ids[2]))
                held.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(30)
    try:
        first = leases_sweep(now=at(30), batch_size=2)
    finally:
        release.set()
        thread.join(30)
    second = leases_sweep(now=at(30), batch_size=2)

    assert (first.review, second.review) == (4, 1)
    assert Message.objects.filter(id__in=ids, status="review").count() == 5
    assert expired_history() == dict.fromkeys(ids, 1)


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["requeue", "discard", "late ack"])
def test_leaving_review_twice_at_once__the_timed_out_delivery_is_written_once(user, second):
    """The second of two concurrent requeues (or a discard or late ack racing one) waits for the
    first, then finds the message gone from review and its history row there (PostgreSQL)."""
    queue = QueueFactory(owner=user)
    message_send(queue=queue, messages=[OutgoingMessage(body="m")], now=T0)
    [got] = message_receive(queue=queue, max_messages=1, now=T0, consumer="w1")
    leases_sweep(now=at(30))
    held, release = threading.Event(), threading.Event()
    answers: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():  # the first requeue, not yet committed
                answers["first"] = review_requeue(queue=queue, ids=[got["id"]], actor="op1", now=at(40))
                held.set()
                release.wait(30)
        finally:
            connection.close()

    def other() -> None:
        try:
            if second == "requeue":
                answers["second"] = review_requeue(queue=queue, ids=[got["id"]], actor="op2", now=at(41))
            elif second == "discard":
                answers["second"] = review_discard(queue=queue, ids=[got["id"]], actor="op2", now=at(41))
            else:
                answers["second"] = message_ack(queue=queue, receipts=[got["receipt"]], now=at(41))[0]["status"]
        finally:
            connection.close()

    threads = [threading.Thread(target=first, daemon=True)]
    threads[0].start()
    assert held.wait(30)
    threads.append(threading.Thread(target=other, daemon=True))
    threads[1].start()
    threads[1].join(0.5)
    assert threads[1].is_alive()  # it waits for the first
    release.set()
    for thread in threads:
        thread.join(30)

    assert answers["first"] == [got["id"]]
    assert answers["second"] in ([], "stale")  # requeue dropped the receipt
    assert list(Delivery.objects.values_list("message_id", "attempt")) == [(got["id"], 1)]


def test_history_without_database_checks__deleting_a_user_or_queue_still_reaches_it(queue, user):
    """The database no longer checks history's keys (migration 0003): Django's own cascades must."""
    other = QueueFactory(owner=user)
    lease(queue, 2, now=T0, user=user)
    lease(other, 1, now=T0, user=user)
    leases_sweep(now=at(30))
    for q in (queue, other):  # leaving review writes the history rows
        review_requeue(queue=q, ids=list(q.messages.values_list("id", flat=True)), now=at(31))
    assert Delivery.objects.filter(leased_by=user).count() == 3

    queue.delete()
    assert list(Delivery.objects.values_list("queue_id", flat=True)) == [other.id]

    other.owner = UserFactory()
    other.save()
    user.delete()
    assert list(Delivery.objects.values_list("leased_by_id", flat=True)) == [None]
    assert list(Message.objects.values_list("leased_by_id", flat=True)) == [None]


def test_message_table__no_index_on_the_queue_alone(db):
    """Each moved lease writes an entry in every index its new row belongs to. A plain index on
    queue_id would be one more for every receive, ack and timed-out lease (about 15% of the
    PostgreSQL sweep's CPU): each status has a partial index that leads with the queue instead."""
    table = Message._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = {name: info["columns"] for name, info in constraints.items() if info["index"]}
    assert ["queue_id"] not in indexes.values(), indexes
    for name in ("message_ready_idx", "message_leased_idx", "message_review_idx", "message_queue_acked_idx"):
        assert indexes[name][0] == "queue_id", indexes


@requires_postgres
def test_message_table__postgresql_checks_the_queue_key_not_the_lease_holders(db):
    """Each leased row's check of its user at commit locked that user's row: 1.15x at B = 100 without it (0013)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Message._meta.db_table)
    checked = sorted(info["columns"] for info in constraints.values() if info["foreign_key"])
    assert checked == [["queue_id"]], checked


@requires_postgres
def test_message_leased_by_a_user_deleted_meanwhile__admin_and_api_show_no_user(queue, user, admin_client):
    """Unchecked, the lease holder's key can outlive its user (deleted while their last receive ran)."""
    ghost = UserFactory()
    [message_id] = lease(queue, 1, now=T0, user=ghost, consumer="w-ghost")
    with connection.cursor() as cursor:  # as that race leaves it: no SET_NULL ran for this row
        cursor.execute("DELETE FROM auth_user WHERE id = %s", [ghost.id])
    leases_sweep(now=at(60))  # into review, its history copied
    assert Message.objects.get(id=message_id).leased_by_id == ghost.id

    for url in (
        "/admin/queues/reviewitem/",
        f"/admin/queues/reviewitem/{message_id}/change/",
        "/admin/queues/message/",
        f"/admin/queues/message/{message_id}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert b"w-ghost" in response.content, url
        if url.endswith("/change/"):  # the delivery history, its user shown as none
            assert b'class="wq-delivery-history"' in response.content and b"Lease expired" in response.content, url
    answer = api_client_for(user).get(f"/api/v1/queues/{queue.name}/review/")
    assert answer.status_code == 200
    [item] = answer.json()["results"]
    assert (item["id"], item["leased_by"], item["deliveries"][0]["leased_by"]) == (message_id, None, None)
    assert item["consumer"] == item["deliveries"][0]["consumer"] == "w-ghost"
