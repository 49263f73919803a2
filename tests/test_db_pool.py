"""PostgreSQL's pool: no check round trip for a connection in steady use; a dead idle one never reaches a request."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection

from tests.conftest import api_client_for, requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_pool():
    """A new pool for each test: earlier tests leave idle connections in the process's pool."""
    connection.close()
    connection.close_pool()
    yield
    connection.close()
    connection.close_pool()


def _kill_pooled_connections() -> int:
    """Terminate every other backend on the test database, as a database restart would."""
    params = {**connection.get_connection_params()}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_pool__a_connection_that_died_while_idle_is_replaced_before_a_request_gets_it(user, queue):
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    assert api.post(f"{base}/messages/", {"body": "before"}, format="json").status_code == 201
    connection.close()  # back to the pool, as at the end of a request
    assert _kill_pooled_connections() >= 1
    time.sleep(1.2)  # longer than WONDERQ_DB_CHECK_AFTER_IDLE: the next loan is checked
    response = api.post(f"{base}/messages/", {"body": "after"}, format="json")  # no 500
    assert response.status_code == 201, response.content
    received = api.post(f"{base}/receive/", {"max_messages": 2}, format="json").json()["messages"]
    assert [m["body"] for m in received] == ["before", "after"]


def test_pool__once_a_request_finds_its_connection_lost_the_others_are_checked_before_their_next_loan(
    monkeypatch, user, queue
):
    """A restart ends every session: the first request meets it, and no other request gets a dead connection."""
    from django.db import OperationalError

    # Lent unchecked however slow this machine is between the loans (the pool is made at the first request).
    monkeypatch.setitem(connection.settings_dict, "CHECK_AFTER_IDLE", 3600)
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    assert api.post(f"{base}/messages/", {"body": "before"}, format="json").status_code == 201
    connection.close()
    held = [connection.pool.getconn() for _ in range(3)]  # the pool holds three, each lent a moment ago
    for pooled in held:
        connection.pool.putconn(pooled)
    assert _kill_pooled_connections() >= 3

    with pytest.raises(OperationalError):  # lent unchecked (in steady use): its request fails
        api.post(f"{base}/messages/", {"body": "cut off"}, format="json")
    connection.close()  # as the end of that request does
    for number in range(3):  # each would have met another dead connection
        response = api.post(f"{base}/messages/", {"body": f"after {number}"}, format="json")
        assert response.status_code == 201, response.content
        connection.close()
    received = api.post(f"{base}/receive/", {"max_messages": 10}, format="json").json()["messages"]
    assert [m["body"] for m in received] == ["before", "after 0", "after 1", "after 2"]


def test_pool__a_connection_in_steady_use_is_lent_without_a_check(monkeypatch, user, queue):
    from psycopg_pool import ConnectionPool

    checks = []
    check = ConnectionPool.check_connection
    monkeypatch.setattr(ConnectionPool, "check_connection", lambda conn: (checks.append(conn), check(conn)))
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    for _ in range(20):  # every connection the pool holds is lent at least once
        assert api.post(f"{base}/receive/", {}, format="json").status_code == 200
        connection.close()  # the test client keeps the connection; a served request gives it back
    checks.clear()
    for _ in range(20):
        assert api.post(f"{base}/receive/", {}, format="json").status_code == 200
        connection.close()
    assert checks == [], "a connection lent a moment ago is lent again without a round trip"
    time.sleep(1.2)
    assert api.post(f"{base}/receive/", {}, format="json").status_code == 200
    assert len(checks) == 1, "after an idle second it is checked first"


def test_pool__a_forked_child_opens_its_own_connections(user):
    """django-q2 forks its processes: a child must never use the parent's sockets."""
    import os

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        parent_pid = cursor.fetchone()[0]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report the backend it talks to, then leave at once
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                os.write(write, str(cursor.fetchone()[0]).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_pid = int(os.read(read, 100) or b"0")
    os.waitpid(child, 0)
    assert child_pid and child_pid != parent_pid
    with connection.cursor() as cursor:  # the parent's session is intact
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == parent_pid
