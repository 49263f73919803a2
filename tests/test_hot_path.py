"""The hot path's cost in statements: what the performance figures rest on.

A request to send, receive or ack is one lookup (queue and grant together) and one
statement for the operation, with authentication served from the cache.
"""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework import serializers

from queues.models import Message
from queues.services import OutgoingMessage, message_ack, message_receive, message_send
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
def test_hot_path__each_api_call_is_one_statement_once_the_queue_is_known(api, queue, django_assert_num_queries, batch):
    base = f"/api/v1/queues/{queue.name}"
    _post(api, f"{base}/receive/", {})  # authentication is now cached
    _post(api, f"{base}/receive/", {})  # and the queue with the caller's grant, by the hot path
    with django_assert_num_queries(1):
        response = _post(api, f"{base}/messages/", {"messages": [{"body": "x"}] * batch})
    assert response.status_code == 201, response.content
    with django_assert_num_queries(1):
        response = _post(api, f"{base}/receive/", {"max_messages": batch})
    assert response.status_code == 200 and len(response.json()["messages"]) == batch
    receipts = [m["receipt"] for m in response.json()["messages"]]
    with django_assert_num_queries(1):
        response = _post(api, f"{base}/ack/", {"receipts": receipts})
    assert [r["status"] for r in response.json()["results"]] == ["acked"] * batch


def test_hot_path__queue_cache_off_looks_the_queue_up_every_time(api, queue, settings, django_assert_num_queries):
    settings.WONDERQ_QUEUE_CACHE_SECONDS = 0
    base = f"/api/v1/queues/{queue.name}"
    _post(api, f"{base}/receive/", {})
    for _ in range(2):
        with django_assert_num_queries(2):
            assert _post(api, f"{base}/messages/", {"messages": [{"body": "x"}]}).status_code == 201


def _prepared_statements() -> dict[str, tuple[int, int]]:
    """This connection's prepared statements: text -> (generic plans, custom plans) run so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


@requires_postgres
def test_hot_path__postgres_prepares_send_once_for_any_batch_size_and_plans_ack_afresh(queue):
    """psycopg prepares a statement after a few runs on a connection, and PostgreSQL then stops
    planning it. Send reads the same for any batch size (an array per column, not a placeholder
    per value), so it is one prepared statement whose plan is reused (generic plans run). Ack is
    planned each time: its generic plan scans the queue's leases instead of the primary key."""
    for round_ in range(15):
        size = 1 + round_ % 3
        message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(size)])
        leased = message_receive(queue=queue, max_messages=size)
        results = message_ack(queue=queue, receipts=[m["receipt"] for m in leased])
        assert [r["status"] for r in results] == ["acked"] * size
    prepared = _prepared_statements()
    sends = [plans for text, plans in prepared.items() if text.lstrip().startswith("INSERT INTO queues_message")]
    assert len(sends) == 1 and sends[0][0] > 0, prepared
    assert not [text for text in prepared if "status = 'acked'" in text], prepared


@requires_postgres
def test_hot_path__postgres_ack_has_one_text_for_any_number_of_receipts(queue):
    """Receipts are array parameters: psycopg parses the statement's text once, not once a request."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(6)])
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        for size in (1, 2, 3):
            message_ack(queue=queue, receipts=[m["receipt"] for m in message_receive(queue=queue, max_messages=size)])
    acks = [sql for sql in statements if "status = 'acked'" in sql]
    assert len(acks) == 3 and len(set(acks)) == 1, acks


@requires_postgres
def test_hot_path__postgres_plans_each_receive_for_its_own_values(queue):
    """Receive is never prepared: a generic plan cannot know how many messages a receive asks
    for, and under a backlog it sorted every ready row instead of walking the ready index."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(2_000)])
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        for _ in range(12):
            message_receive(queue=queue, max_messages=10)
    assert not [text for text in _prepared_statements() if "WITH picked AS MATERIALIZED" in text]
    sql, params = statements[-1]
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # The pick walks the ready index; the one sort is of the leased rows (at most
    # max_messages), to hand them back oldest first.
    picked = plan.split("CTE picked", 1)[1].split("CTE leased", 1)[0]
    assert "message_ready_idx" in picked and "Sort" not in picked, plan
    assert plan.count("Sort Key") == 1 and "Sort Key: leased.available_at, leased.id" in plan, plan


def test_hot_path__receive_writes_timestamps_as_drf_does(api, queue):
    """The view formats timestamps itself; they must read exactly as the documented DateTimeField's."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(3)])
    response = _post(api, f"/api/v1/queues/{queue.name}/receive/", {"max_messages": 3})
    field = serializers.DateTimeField()
    for message in response.json()["messages"]:
        row = Message.objects.get(id=message["id"])
        assert message["sent_at"] == field.to_representation(row.sent_at)
        assert message["lease_expires_at"] == field.to_representation(row.lease_expires_at)
