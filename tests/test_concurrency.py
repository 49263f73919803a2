"""Concurrency: real threads, each on its own database connection, against a file database.

These run on SQLite (the default, a file: see settings) and on PostgreSQL with
DATABASE_URL set. Nothing here mocks the database or the clock.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone

from queues.models import Delivery, Message, Queue, ReviewDecision
from queues.services import (
    ACKED,
    ACKED_LATE,
    STALE,
    OutgoingMessage,
    leases_sweep,
    message_ack,
    message_receive,
    message_send,
)
from tests.conftest import histories
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(targets: list[Callable[[], None]], *, timeout: float) -> list[str]:
    """Run each target in its own thread; return the tracebacks of any that raised."""
    errors: list[str] = []

    def wrap(target):
        try:
            target()
        except BaseException:
            errors.append(traceback.format_exc())
        finally:
            # Each thread opened its own connection: give it back before the test flushes.
            connection.close()

    threads = [threading.Thread(target=wrap, args=(target,), daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads still running after the timeout"
    return errors


def send_many(queue: Queue, n: int, *, now: dt.datetime | None = None) -> list[int]:
    ids = []
    for start in range(0, n, 100):
        batch = [OutgoingMessage(body=f"m{i}") for i in range(start, min(n, start + 100))]
        ids += [sent.id for sent in message_send(queue=queue, messages=batch, now=now)]
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("on_timeout", ["review", "requeue"])
def test_message_receive__eight_consumers_each_message_delivered_exactly_once(user, on_timeout):
    queue = QueueFactory(owner=user, on_timeout=on_timeout, visibility_timeout=600)
    ids = send_many(queue, 2_000)
    delivered: list[list[int]] = [[] for _ in range(8)]
    ack_statuses: Counter = Counter()
    lock = threading.Lock()

    def consumer(n: int) -> None:
        while True:
            got = message_receive(queue=queue, consumer=f"c{n}", max_messages=10)
            if not got:
                return
            delivered[n] += [m["id"] for m in got]
            results = message_ack(queue=queue, receipts=[m["receipt"] for m in got])
            with lock:
                ack_statuses.update(result["status"] for result in results)

    started = time.perf_counter()
    errors = run_threads([lambda n=n: consumer(n) for n in range(8)], timeout=120)
    elapsed = time.perf_counter() - started

    assert errors == [], "\n".join(errors)  # in particular, no "database is locked"
    everything = [message_id for per_thread in delivered for message_id in per_thread]
    duplicates = [message_id for message_id, n in Counter(everything).items() if n > 1]
    assert duplicates == []
    assert sorted(everything) == sorted(ids)
    assert ack_statuses == {ACKED: 2_000}
    assert Message.objects.filter(queue=queue, status=Message.Status.ACKED, receive_count=1).count() == 2_000
    assert not Delivery.objects.exists()
    busy = sum(1 for per_thread in delivered if per_thread)
    print(f"\n{connection.vendor} {on_timeout}: 2,000 messages by 8 threads ({busy} got work) in {elapsed:.2f}s")


@pytest.mark.slow
@pytest.mark.parametrize("on_timeout", ["review", "requeue"])
def test_message_ack__racing_the_sweep_at_expiry(user, on_timeout):
    """Consumers ack around the moment their 1 s lease runs out while a sweeper runs every 0.5 s."""
    queue = QueueFactory(owner=user, on_timeout=on_timeout, visibility_timeout=1, max_receives=3)
    ids = send_many(queue, 300)
    lock = threading.Lock()
    # message id -> [(receive_count, receipt, received_at)] in delivery order
    deliveries: dict[int, list[tuple[int, str, dt.datetime]]] = defaultdict(list)
    # message id -> [(receipt, status, asked_at)] of every ack that took effect
    acks: dict[int, list[tuple[str, str, dt.datetime]]] = defaultdict(list)
    answers: Counter = Counter()
    consumers_left = [5]
    sweeps: list[int] = []

    def unfinished() -> bool:
        return Message.objects.filter(queue=queue, status__in=[Message.Status.READY, Message.Status.LEASED]).exists()

    def consumer(n: int) -> None:
        try:
            consume(n)
        finally:
            with lock:
                consumers_left[0] -= 1

    def consume(n: int) -> None:
        rng = random.Random(n)
        while True:
            got = message_receive(queue=queue, consumer=f"c{n}", max_messages=10)
            if not got:
                if not unfinished():
                    return
                time.sleep(0.05)
                continue
            received = timezone.now()
            with lock:
                for m in got:
                    deliveries[m["id"]].append((m["receive_count"], m["receipt"], received))
            # Each message finishes on its own schedule, 0.8-1.2 s after the receive.
            plan = sorted((rng.uniform(0.8, 1.2), m["id"], m["receipt"]) for m in got)
            start = time.monotonic()
            for delay, message_id, receipt in plan:
                time.sleep(max(0.0, start + delay - time.monotonic()))
                asked_at = timezone.now()
                [result] = message_ack(queue=queue, receipts=[receipt])
                with lock:
                    answers[result["status"]] += 1
                    if result["status"] in (ACKED, ACKED_LATE):
                        acks[message_id].append((receipt, result["status"], asked_at))

    def sweeper() -> None:
        while consumers_left[0]:
            sweeps.append(leases_sweep(batch_size=50).total)
            time.sleep(0.5)

    started = time.perf_counter()
    errors = run_threads([sweeper, *(lambda n=n: consumer(n) for n in range(5))], timeout=90)
    elapsed = time.perf_counter() - started
    leases_sweep()  # materialise anything that expired after the last pass

    assert errors == [], "\n".join(errors)
    rows = {row["id"]: row for row in Message.objects.filter(queue=queue).values()}
    assert sorted(rows) == sorted(ids)  # never lost
    expired = Counter(
        {
            message_id: sum(d.outcome == Delivery.Outcome.EXPIRED for d in shown)
            for message_id, shown in histories().items()
        }
    )
    late_decisions = Counter(
        ReviewDecision.objects.filter(action=ReviewDecision.Action.ACKED_LATE).values_list("message_id", flat=True)
    )
    for message_id, row in rows.items():
        # Exactly one of {acked, review}: one status column, and it is one of these two.
        assert row["status"] in (Message.Status.ACKED, Message.Status.REVIEW), row
        history = sorted(deliveries[message_id])
        assert [count for count, _, _ in history] == list(range(1, len(history) + 1))
        assert row["receive_count"] == len(history)
        # At most one ack ever took effect, and only for the latest delivery:
        # nothing was redelivered after its ack.
        assert len(acks[message_id]) <= 1, acks[message_id]
        if row["status"] == Message.Status.ACKED:
            [(receipt, status, _)] = acks[message_id]
            assert receipt == history[-1][1] == row["receipt"]
            assert status == (ACKED if row["acked_from"] == "leased" else ACKED_LATE)
            # Acked on time (or expired but not yet swept): the last delivery left no expiry
            # behind. Acked from review (or from READY in a requeue queue): it expired exactly once.
            expected_expiries = len(history) - 1 + (row["acked_from"] in ("review", "ready"))
            assert expired[message_id] == expected_expiries, (row, expired[message_id])
            assert late_decisions[message_id] == (row["acked_from"] == "review")
        else:
            assert acks[message_id] == []
            assert expired[message_id] == len(history)
            assert late_decisions[message_id] == 0
            assert row["review_reason"] == ("timeout" if on_timeout == "review" else "max_receives")
    if on_timeout == "review":
        # A review queue never hands a timed-out message to anyone else.
        assert all(len(deliveries[message_id]) == 1 for message_id in ids)
    outcome = Counter(
        f"acked from {row['acked_from']}" if row["status"] == Message.Status.ACKED else "in review"
        for row in rows.values()
    )
    print(
        f"\n{connection.vendor} {on_timeout}: {elapsed:.1f}s, {len(sweeps)} sweeps moving {sum(sweeps)},"
        f" final states {dict(outcome)}, ack answers {dict(answers)}"
    )
    # The race really happened: some acks landed on time, and some found the lease gone.
    assert outcome["acked from leased"] > 0
    assert answers[ACKED_LATE] + answers[STALE] > 0


@pytest.mark.slow
def test_leases_sweep__two_sweepers_move_each_message_once(user):
    queue = QueueFactory(owner=user, visibility_timeout=30)
    past = timezone.now() - dt.timedelta(minutes=5)
    ids = send_many(queue, 1_000, now=past)
    for _ in range(10):
        assert len(message_receive(queue=queue, max_messages=100, now=past)) == 100
    results = []
    barrier = threading.Barrier(2)

    def sweeper() -> None:
        barrier.wait()
        results.append(leases_sweep(batch_size=25))

    errors = run_threads([sweeper, sweeper], timeout=60)

    assert errors == [], "\n".join(errors)
    assert sum(result.review for result in results) == 1_000
    assert sum(result.ready for result in results) == 0
    assert Message.objects.filter(id__in=ids, status=Message.Status.REVIEW, review_reason="timeout").count() == 1_000
    expired = Counter((message_id, d.outcome) for message_id, shown in histories().items() for d in shown)
    assert expired == {(message_id, Delivery.Outcome.EXPIRED): 1 for message_id in ids}
    assert not Delivery.objects.exists()  # into review: each delivery stays on its message row
    print(f"\n{connection.vendor}: sweepers moved {[result.review for result in results]}")


@pytest.mark.parametrize("batch", [1, 10_000])
def test_message_receive__a_run_out_lease_another_receive_holds_is_stepped_over(settings, user, batch):
    """Requeue queue, two run-out leases, no sweep. Receive A moves and leases the first and holds its
    transaction open; receive B, meanwhile, must take the second, not wait on the first and then find
    nothing (on PostgreSQL it waited on A's lock and moved none; SQLite's receives take turns)."""
    settings.WONDERQ_SWEEP_BATCH = batch  # 1: B's budget is spent on the one A holds
    queue = QueueFactory(owner=user, on_timeout="requeue", visibility_timeout=30, max_receives=5)
    t0 = timezone.now() - dt.timedelta(minutes=5)
    first, second = (m.id for m in message_send(queue=queue, messages=[OutgoingMessage(body="a")] * 2, now=t0))
    message_receive(queue=queue, max_messages=2, now=t0)  # both run out at t0 + 30 s
    now = t0 + dt.timedelta(seconds=60)
    a_has_it = threading.Event()
    got = {}

    def receive_a():
        from django.db import transaction

        with transaction.atomic():
            got["a"] = [m["id"] for m in message_receive(queue=queue, max_messages=1, now=now)]
            a_has_it.set()
            time.sleep(1.5)

    def receive_b():
        assert a_has_it.wait(10)
        got["b"] = [m["id"] for m in message_receive(queue=queue, max_messages=1, now=now)]

    assert run_threads([receive_a, receive_b], timeout=30) == []
    assert got["a"] == [first]
    assert got["b"] == ([second] if batch > 1 or connection.vendor == "sqlite" else [])
