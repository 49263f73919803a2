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
from tests.conftest import function_plans, requires_postgres


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
def test_hot_path__postgres_plans_send_receive_and_ack_once_per_connection(queue):
    """psycopg prepares a statement after a few runs on a connection, and PostgreSQL then stops
    planning it. Send reads the same for any batch size (a JSON batch, not a placeholder per
    value); receive and ack are calls of functions that keep their own plans (migrations 0006
    and 0007). Each is one prepared statement whose generic plan runs, whatever the batch size."""
    for round_ in range(15):
        size = 1 + round_ % 3
        message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(size)])
        leased = message_receive(queue=queue, max_messages=size)
        results = message_ack(queue=queue, receipts=[m["receipt"] for m in leased])
        assert [r["status"] for r in results] == ["acked"] * size
    prepared = _prepared_statements()
    for marker in ("INSERT INTO queues_message", "queues_message_receive(", "queues_message_ack("):
        plans = [plans for text, plans in prepared.items() if marker in text]
        assert len(plans) == 1 and plans[0][0] > 0, (marker, prepared)


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
    acks = [sql for sql in statements if "queues_message_ack(" in sql]
    assert len(acks) == 3 and len(set(acks)) == 1, acks


def _worst_estimates() -> None:
    """Statistics of an almost empty table, a random page at 10,000 times a sequential one, and
    every kept plan dropped, so that functions make theirs again under these estimates."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
        cursor.execute("SET LOCAL random_page_cost = 10000")
        cursor.execute("DISCARD PLANS")


def _generic_pick_plan() -> str:
    """The plan PostgreSQL would keep for receive's pick as a plain prepared statement, now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "PREPARE pick(bigint, timestamptz, integer) AS SELECT id FROM queues_message"
            " WHERE queue_id = $1 AND status = 'ready' AND available_at <= $2"
            " ORDER BY available_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        )
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("EXPLAIN EXECUTE pick(1, now(), 10)")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE pick")
        cursor.execute("SET LOCAL plan_cache_mode = auto")
    return plan


@requires_postgres
def test_hot_path__postgres_receive_walks_the_ready_index_and_goes_by_ctid_under_the_worst_estimates(queue):
    """Receive's function keeps its statements' plans (until the table's statistics change). A
    plain statement's kept plan follows the estimates of its time. Here they are the worst case: the
    statistics of an almost empty table, and a random page at 10,000 times a sequential one.
    The premise, checked first: a plain statement's plan reads every row and sorts them, which
    kept while a backlog builds up is a read of the whole table on every receive. The function's
    plans, made then and kept while 3,000 messages arrive, still walk the ready index and update
    the picked rows by ctid (a join by id walked the whole ready index once)."""
    message_send(queue=queue, messages=[OutgoingMessage(body="first")])
    _worst_estimates()
    premise = _generic_pick_plan()
    assert "Seq Scan" in premise and "message_ready_idx" not in premise, premise
    assert [m["body"] for m in message_receive(queue=queue)] == ["first"]
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(3_000)])
    received = []
    plans = function_plans(lambda: received.extend(message_receive(queue=queue, max_messages=10)))
    assert [m["body"] for m in received] == [f"m{i}" for i in range(10)]
    [pick] = [plan for plan in plans if "array_agg(p.ctid)" in plan]
    assert "Index Scan using message_ready_idx" in pick, pick
    assert "Sort" not in pick and "Seq Scan" not in pick and "Bitmap" not in pick, pick
    [update] = [plan for plan in plans if "WITH leased AS" in plan]
    assert "Tid Scan on queues_message" in update and "Index" not in update and "Seq Scan" not in update, update
    # The one sort is of the leased rows (at most max_messages), to hand them back oldest first.
    assert update.count("Sort Key") == 1 and "Sort Key: l.available_at, l.id" in update, update


@requires_postgres
def test_hot_path__postgres_ack_goes_to_the_primary_key_under_the_worst_estimates(queue):
    """Ack's function makes its plan here under the worst estimates (as for receive above), and
    keeps it while 3,000 more messages arrive: it still goes to the primary
    keys it is given, never a scan of the table or of an index's every entry. Its statuses are a
    parameter, so no partial index's condition is implied and none of them qualifies."""
    message_send(queue=queue, messages=[OutgoingMessage(body="first")])
    _worst_estimates()
    [first] = message_receive(queue=queue)
    assert [r["status"] for r in message_ack(queue=queue, receipts=[first["receipt"]])] == ["acked"]
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(3_000)])
    leased = message_receive(queue=queue, max_messages=3)
    results = []
    plans = function_plans(lambda: results.extend(message_ack(queue=queue, receipts=[m["receipt"] for m in leased])))
    assert [r["status"] for r in results] == ["acked"] * 3
    [plan] = [plan for plan in plans if "WITH acked AS" in plan]
    assert "Index Scan using queues_message_pkey" in plan and "Index Cond: (id = ANY (" in plan, plan
    assert plan.count("Index") == 2 and "Seq Scan" not in plan and "Bitmap" not in plan, plan


def test_hot_path__receive_writes_timestamps_as_drf_does(api, queue):
    """The view formats timestamps itself; they must read exactly as the documented DateTimeField's."""
    message_send(queue=queue, messages=[OutgoingMessage(body=f"m{i}") for i in range(3)])
    response = _post(api, f"/api/v1/queues/{queue.name}/receive/", {"max_messages": 3})
    field = serializers.DateTimeField()
    for message in response.json()["messages"]:
        row = Message.objects.get(id=message["id"])
        assert message["sent_at"] == field.to_representation(row.sent_at)
        assert message["lease_expires_at"] == field.to_representation(row.lease_expires_at)
