"""SQLite with writers queued by the kernel rather than by SQLite's busy handler.

SQLite lets one writer in at a time. A writer that finds the lock taken sleeps in
the busy handler (1, 2, 5, 10 ... ms) and tries again, so under concurrent writes
most of the time goes to sleeping. Here every write transaction, and every write
statement run outside one, first takes an exclusive `flock` on a file beside the
database: a waiting writer is woken the moment the lock is free. SQLite's own lock
still decides; the file lock only orders the writers that reach it, and the busy
timeout still covers writers that do not take it (another program, the sqlite3
shell).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from itertools import islice

from django.db.backends.sqlite3 import base
from django.db.backends.sqlite3.base import SQLiteCursorWrapper

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "WITH")


class _WriterLock:
    """An exclusive, re-entrant lock on `<database>-writer.lock`, one file descriptor per connection."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.depth = 0

    def acquire(self) -> None:
        if self.depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks without holding the GIL
        self.depth += 1

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)  # closing the descriptor drops the lock too


class WriterLockingCursor(SQLiteCursorWrapper):
    writer: _WriterLock | None = None
    # The rows of a write with RETURNING run outside a transaction, read while the lock was held.
    _rows: Iterator | None = None

    def execute(self, query, params=None):
        self._rows = None
        writer = self.writer
        if writer is None or self.connection.in_transaction or not query.lstrip()[:7].upper().startswith(_WRITES):
            return super().execute(query, params)
        writer.acquire()
        try:
            super().execute(query, params)
            if self.description is not None:
                # A write with RETURNING runs to its end, and SQLite lets go of the database's write
                # lock, only once its rows are read: until then the next writer would find the file
                # lock free and sleep in the busy handler. So they are read here, under the lock.
                self._rows = iter(super().fetchall())
            return self
        finally:
            writer.release()

    def executemany(self, query, param_list):
        # Only writes take several parameter sets (SQLite refuses a SELECT here), so every one takes the lock.
        self._rows = None
        writer = self.writer
        if writer is None or self.connection.in_transaction:
            return super().executemany(query, param_list)
        writer.acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            writer.release()

    def fetchone(self):
        if self._rows is None:
            return super().fetchone()
        return next(self._rows, None)

    def fetchmany(self, size=None):
        if self._rows is None:
            return super().fetchmany(self.arraysize if size is None else size)
        return list(islice(self._rows, self.arraysize if size is None else size))

    def fetchall(self):
        if self._rows is None:
            return super().fetchall()
        return list(self._rows)

    def __next__(self):
        if self._rows is None:
            return super().__next__()
        return next(self._rows)


class DatabaseWrapper(base.DatabaseWrapper):
    _writer: _WriterLock | None = None
    _transaction_locked = False

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            self._writer = _WriterLock(f"{self.settings_dict['NAME']}-writer.lock")
        return connection

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=WriterLockingCursor)
        cursor.writer = self._writer
        return cursor

    def _start_transaction_under_autocommit(self):
        if self._writer is not None and not self._transaction_locked:
            self._writer.acquire()
            self._transaction_locked = True
        try:
            super()._start_transaction_under_autocommit()
        except Exception:
            self._release_transaction_lock()
            raise

    def _release_transaction_lock(self) -> None:
        if self._transaction_locked:
            self._transaction_locked = False
            self._writer.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_transaction_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_transaction_lock()

    def _close(self):
        try:
            super()._close()
        finally:
            if self._writer is not None:
                self._transaction_locked = False
                self._writer.close()
                self._writer = None
