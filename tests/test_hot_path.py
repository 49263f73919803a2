"""The hot path's cost in statements: what the performance figures rest on.

A request to send, receive or ack is one lookup (queue and grant together) and one
statement for the operation, with authentication served from the cache.
"""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework import serializers

from queues.models import Message
from queues.services import OutgoingMessage, message_receive, message_send
from tests.conftest import requires_postgres


def _post(client, path, body):
    return client.post(path, body, format="json")


def test_hot_path__send_batch_is_one_statement(queue, django_assert_num_queries):
    with django_assert_num_queries(1):
        sent = message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(100)])
    assert len(sent) == 100 and len({s.id for s in sent}) == 100


def test_hot_path__receive_is_one_statement(queue, django_assert_num_queries):
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(20)])
    with django_assert_num_queries(1):
        leased = message_receive(queue=queue, max_messages=10)
    assert [m["body"] for m in leased] == [f"m{i}" for i in range(10)]


@pytest.mark.parametrize("batch", [1, 100])
def test_hot_path__each_api_call_is_a_lookup_and_one_statement(api, queue, django_assert_num_queries, batch):
    base = f"/api/v1/queues/{queue.name}"
    _post(api, f"{base}/receive/", {})  # authentication is now cached
    with django_assert_num_queries(2):
        response = _post(api, f"{base}/messages/", {"messages": [{"body": "x"}] * batch})
    assert response.status_code == 201, response.content
    with django_assert_num_queries(2):
        response = _post(api, f"{base}/receive/", {"max_messages": batch})
    assert response.status_code == 200 and len(response.json()["messages"]) == batch
    receipts = [m["receipt"] for m in response.json()["messages"]]
    with django_assert_num_queries(2):
        response = _post(api, f"{base}/ack/", {"receipts": receipts})
    assert [r["status"] for r in response.json()["results"]] == ["acked"] * batch


@requires_postgres
def test_hot_path__postgres_prepares_the_receive_statement(queue):
    """After a few runs on a connection psycopg prepares it: PostgreSQL stops planning it each time."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(10)])
    for _ in range(8):
        message_receive(queue=queue, max_messages=1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("WITH picked AS MATERIALIZED" in statement for statement in prepared), prepared


def test_hot_path__receive_writes_timestamps_as_drf_does(api, queue):
    """The view formats timestamps itself; they must read exactly as the documented DateTimeField's."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(3)])
    response = _post(api, f"/api/v1/queues/{queue.name}/receive/", {"max_messages": 3})
    field = serializers.DateTimeField()
    for message in response.json()["messages"]:
        row = Message.objects.get(id=message["id"])
        assert message["sent_at"] == field.to_representation(row.sent_at)
        assert message["lease_expires_at"] == field.to_representation(row.lease_expires_at)
