"""The SQLite backend queues writers on a file lock instead of failing them after the busy timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from queues.models import Message
from queues.services import OutgoingMessage, message_send
from tests.factories import QueueFactory

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the writer lock is part of the SQLite backend"),
]


@pytest.fixture
def short_busy_timeout():
    """New connections give up on SQLite's own lock after 50 ms (the default is 20 s)."""
    options = connections.settings["default"]["OPTIONS"]
    saved = options["timeout"]
    options["timeout"] = 0.05
    yield
    options["timeout"] = saved


def _in_thread(target) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run():
        try:
            outcome.append(target())
        except Exception as exc:  # reported to the test, which asserts there was none
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit-statement", "atomic-block"])
def test_sqlite_writer__waits_for_a_long_writer_instead_of_failing(short_busy_timeout, in_transaction):
    queue = QueueFactory()
    holding, release = threading.Event(), threading.Event()

    def long_writer():
        with transaction.atomic():
            message_send(queue=queue, messages=[OutgoingMessage(body="first")])
            holding.set()
            release.wait(5)
        return "committed"

    def second_writer():
        if in_transaction:
            with transaction.atomic():
                return message_send(queue=queue, messages=[OutgoingMessage(body="second")])
        return message_send(queue=queue, messages=[OutgoingMessage(body="second")])

    first, first_outcome = _in_thread(long_writer)
    assert holding.wait(5)
    second, second_outcome = _in_thread(second_writer)
    # Ten times SQLite's busy timeout: without the file lock the second writer has failed by now.
    time.sleep(0.5)
    assert second.is_alive(), f"the second writer did not wait: {second_outcome}"
    release.set()
    first.join(5)
    second.join(5)
    assert first_outcome == ["committed"]
    assert not isinstance(second_outcome[0], Exception), second_outcome
    assert sorted(Message.objects.values_list("body", flat=True)) == ["first", "second"]


def test_sqlite_writer__executemany_waits_for_a_long_writer_too(short_busy_timeout):
    """executemany went straight to SQLite: behind a writer it failed after the busy timeout."""
    queue = QueueFactory()
    message_send(queue=queue, messages=[OutgoingMessage(body="a"), OutgoingMessage(body="b")])
    holding, release = threading.Event(), threading.Event()

    def long_writer():
        with transaction.atomic():
            message_send(queue=queue, messages=[OutgoingMessage(body="c")])
            holding.set()
            release.wait(5)
        return "committed"

    def many_writer():
        with connection.cursor() as cursor:
            table = Message._meta.db_table
            cursor.executemany(f"UPDATE {table} SET consumer = %s WHERE body = %s", [("x", "a"), ("y", "b")])
        return "updated"

    first, first_outcome = _in_thread(long_writer)
    assert holding.wait(5)
    second, second_outcome = _in_thread(many_writer)
    time.sleep(0.5)  # ten times SQLite's busy timeout
    assert second.is_alive(), f"executemany did not wait: {second_outcome}"
    release.set()
    first.join(5)
    second.join(5)
    assert (first_outcome, second_outcome) == (["committed"], ["updated"])
    assert dict(Message.objects.filter(body__in="ab").values_list("body", "consumer")) == {"a": "x", "b": "y"}


def test_sqlite_writer__a_write_whose_rows_are_not_read_yet_holds_no_lock(short_busy_timeout):
    """An autocommit INSERT ... RETURNING holds SQLite's write lock until its rows are read. They are
    read under the file lock, so a caller slow to fetch them (Django's own save reads one row and
    leaves the rest to the cursor's close) never leaves the next writer to the busy handler."""
    queue = QueueFactory()
    executed, go_on = threading.Event(), threading.Event()
    insert = (
        f"INSERT INTO {Message._meta.db_table} (queue_id, status, body, attributes, sent_at, available_at,"
        " receive_count, consumer, review_reason, review_note, acked_from) VALUES"
        " (%s, 'ready', 'a', '{}', '2020-01-01 00:00:00', '2020-01-01 00:00:00', 0, '', '', '', ''),"
        " (%s, 'ready', 'b', '{}', '2020-01-01 00:00:00', '2020-01-01 00:00:00', 0, '', '', '', '')"
        " RETURNING id"
    )

    def slow_reader():
        with connection.cursor() as cursor:
            cursor.execute(insert, [queue.id, queue.id])
            executed.set()
            go_on.wait(5)
            return [cursor.fetchone(), *cursor.fetchmany(5), cursor.fetchone()]

    def next_writer():
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {Message._meta.db_table} SET consumer = 'x'")
            return cursor.rowcount

    first, first_outcome = _in_thread(slow_reader)
    assert executed.wait(5)
    second, second_outcome = _in_thread(next_writer)
    second.join(5)  # ten times SQLite's busy timeout: it has failed by now, or done
    go_on.set()
    first.join(5)
    assert second_outcome == [2]
    [(one,), (two,), none] = first_outcome[0]
    assert (two - one, none) == (1, None)


def test_sqlite_writer__reads_do_not_wait_for_a_writer(short_busy_timeout):
    queue = QueueFactory()
    message_send(queue=queue, messages=[OutgoingMessage(body="old")])
    holding, release = threading.Event(), threading.Event()

    def long_writer():
        with transaction.atomic():
            message_send(queue=queue, messages=[OutgoingMessage(body="new")])
            holding.set()
            release.wait(5)

    writer, _ = _in_thread(long_writer)
    assert holding.wait(5)
    reader, seen = _in_thread(lambda: list(Message.objects.values_list("body", flat=True)))
    reader.join(2)
    release.set()
    writer.join(5)
    # WAL: the reader saw the last committed state at once, without the uncommitted row.
    assert seen == [["old"]]


@pytest.mark.parametrize(("value", "pragma"), [(None, "1"), ("FULL", "2")], ids=["default-normal", "full"])
def test_sqlite_synchronous__set_from_the_environment(tmp_path, value, pragma):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1"}
    env.pop("WONDERQ_SQLITE_SYNCHRONOUS", None)
    if value:
        env["WONDERQ_SQLITE_SYNCHRONOUS"] = value
    code = (
        "from django.db import connection; c = connection.cursor(); "
        "c.execute('PRAGMA synchronous'); print(c.fetchone()[0])"
    )
    run = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == pragma


def test_sqlite_synchronous__unknown_value_refused(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1"}
    env["WONDERQ_SQLITE_SYNCHRONOUS"] = "OFF"
    run = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "WONDERQ_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA" in run.stderr
