"""The scheduled tasks call the services; snapshots record depth and throughput."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queues import services, tasks
from queues.models import Message, QueueSnapshot
from queues.services.maintenance import stats_snapshot
from tests.factories import MessageFactory, QueueFactory

pytestmark = pytest.mark.django_db


def test_sweep_task__moves_expired_leases():
    queue = QueueFactory()
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory.create_batch(2, queue=queue, sent_at=past)
    services.message_receive(queue=queue, max_messages=2, now=past)
    assert tasks.sweep() == {"review": 2, "ready": 0, "batches": 1}
    assert Message.objects.filter(status="review").count() == 2


def test_stats_snapshot__counts_depth_sent_and_acked_since_the_previous_one():
    queue = QueueFactory()
    t0 = timezone.now() - dt.timedelta(minutes=10)
    services.message_send(queue=queue, messages=[services.OutgoingMessage(body=str(i)) for i in range(5)], now=t0)
    assert stats_snapshot(now=t0 + dt.timedelta(seconds=1)) == 1
    first = QueueSnapshot.objects.get()
    assert (first.ready, first.sent, first.acked) == (5, 5, 0)

    t1 = t0 + dt.timedelta(minutes=1)
    leased = services.message_receive(queue=queue, max_messages=2, now=t1)
    services.message_ack(queue=queue, receipts=[leased[0]["receipt"]], now=t1)
    services.message_send(queue=queue, messages=[services.OutgoingMessage(body="new")], now=t1)
    stats_snapshot(now=t1 + dt.timedelta(seconds=1))
    second = QueueSnapshot.objects.order_by("-taken_at").first()
    assert (second.ready, second.leased, second.sent, second.acked) == (4, 1, 1, 1)


def test_stats_snapshot__counts_each_queue_apart_and_a_queue_made_since():
    """What each queue was sent is read once for all queues, from the ids after the last snapshot:
    each queue gets its own count, and a queue made between two snapshots counts all it got."""
    first, second = QueueFactory(), QueueFactory()
    t0 = timezone.now() - dt.timedelta(minutes=10)

    def send(queue, n, now):
        services.message_send(queue=queue, messages=[services.OutgoingMessage(body=str(i)) for i in range(n)], now=now)

    send(first, 3, t0)
    send(second, 2, t0)
    send(first, 1, t0)
    assert stats_snapshot(now=t0 + dt.timedelta(seconds=1)) == 2
    t1 = t0 + dt.timedelta(minutes=1)
    third = QueueFactory()
    send(third, 4, t1)
    send(second, 5, t1)
    assert stats_snapshot(now=t1 + dt.timedelta(seconds=1)) == 3
    t2 = t1 + dt.timedelta(minutes=1)
    send(third, 1, t2)
    with CaptureQueriesContext(connection) as queries:
        stats_snapshot(now=t2 + dt.timedelta(seconds=1))

    sent = {}
    for snapshot in QueueSnapshot.objects.order_by("taken_at"):
        sent.setdefault(snapshot.queue_id, []).append(snapshot.sent)
    assert sent == {first.id: [4, 0, 0], second.id: [2, 5, 0], third.id: [4, 1]}
    # Once every queue has seen the same id, one statement reads what all of them were sent.
    reads = [q["sql"] for q in queries.captured_queries if 'MAX("queues_message"."id")' in q["sql"]]
    assert len(reads) == 1, reads


def test_stats_snapshot__catches_up_from_ids_each_queue_saw_last():
    """Snapshots taken before the shared watermark each kept their own queue's last id: the next
    one counts each queue from there, not from the lowest of them."""
    busy, idle = QueueFactory(), QueueFactory()
    t0 = timezone.now() - dt.timedelta(minutes=10)
    services.message_send(queue=busy, messages=[services.OutgoingMessage(body=str(i)) for i in range(3)], now=t0)
    seen = Message.objects.filter(queue=busy).order_by("-id").values_list("id", flat=True).first()
    QueueSnapshot.objects.create(queue=busy, taken_at=t0, last_message_id=seen)
    QueueSnapshot.objects.create(queue=idle, taken_at=t0, last_message_id=0)
    services.message_send(queue=busy, messages=[services.OutgoingMessage(body="new")], now=t0)

    stats_snapshot(now=t0 + dt.timedelta(minutes=1))
    latest = {s.queue_id: s.sent for s in QueueSnapshot.objects.filter(taken_at=t0 + dt.timedelta(minutes=1))}
    assert latest == {busy.id: 1, idle.id: 0}


def test_prune_task__returns_counts():
    assert tasks.prune_old() == {"acked": 0, "deliveries": 0, "snapshots": 0, "decisions": 0}


def test_stats_snapshot__statements_do_not_grow_with_queues(django_assert_max_num_queries):
    """Every minute, for every queue: the previous snapshots, counts, sent and acked are each read in
    one statement for all queues, not one per queue (at 1,000 queues that was 2,000 a minute)."""
    t0 = timezone.now() - dt.timedelta(minutes=10)
    queues = QueueFactory.create_batch(40)
    for queue in queues[:3]:
        services.message_send(queue=queue, messages=[services.OutgoingMessage(body="a")], now=t0)
    stats_snapshot(now=t0)
    t1 = t0 + dt.timedelta(minutes=1)
    for queue in queues[:3]:
        [got] = services.message_receive(queue=queue, now=t1)
        services.message_ack(queue=queue, receipts=[got["receipt"]], now=t1)
    # The queues, their previous snapshots; counts; sent; acked; the insert.
    with django_assert_max_num_queries(5):
        assert stats_snapshot(now=t1 + dt.timedelta(seconds=1)) == 40
    latest = QueueSnapshot.objects.filter(taken_at=t1 + dt.timedelta(seconds=1))
    assert sorted(latest.values_list("acked", flat=True)) == [0] * 37 + [1] * 3


def test_stats_snapshot__counts_acks_from_each_queues_own_previous_snapshot():
    """A queue whose last snapshot is older (made before the others', or skipped) counts its acks
    from there; a queue with none yet counts the last minute's."""
    old, recent, new = QueueFactory(), QueueFactory(), QueueFactory()
    t0 = timezone.now() - dt.timedelta(minutes=30)
    for queue in (old, recent, new):
        services.message_send(queue=queue, messages=[services.OutgoingMessage(body=str(i)) for i in range(3)], now=t0)
    QueueSnapshot.objects.create(queue=old, taken_at=t0)
    QueueSnapshot.objects.create(queue=recent, taken_at=t0 + dt.timedelta(minutes=10))
    for minutes, queue in ((5, old), (5, recent), (15, old), (15, recent), (15, new), (29.5, new), (29.5, recent)):
        when = t0 + dt.timedelta(minutes=minutes)
        [got] = services.message_receive(queue=queue, now=when)
        services.message_ack(queue=queue, receipts=[got["receipt"]], now=when)

    stats_snapshot(now=t0 + dt.timedelta(minutes=30))

    acked = dict(QueueSnapshot.objects.filter(taken_at=t0 + dt.timedelta(minutes=30)).values_list("queue", "acked"))
    assert acked == {old.id: 2, recent.id: 2, new.id: 1}


def test_queue_counts__more_queues_than_a_statement_has_placeholders():
    """PostgreSQL binds at most 65,535 parameters: the queue ids are one array parameter there."""
    ids = list(range(1, 70_001))
    counts = services.queue_counts(queue_ids=ids, now=timezone.now())
    assert len(counts) == 70_000
    assert counts[70_000] == {"ready": 0, "delayed": 0, "leased": 0, "review": 0, "oldest_ready_age_seconds": None}
