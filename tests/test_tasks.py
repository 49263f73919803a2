"""The scheduled tasks call the services; snapshots record depth and throughput."""

from __future__ import annotations

import datetime as dt

import pytest
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


def test_prune_task__returns_counts():
    assert tasks.prune_old() == {"acked": 0, "deliveries": 0, "snapshots": 0, "decisions": 0}
