"""gunicorn workers that share the open connections out evenly: a worker takes one only while it holds the fewest.

gunicorn leaves the choice of worker to the kernel: every worker waits on the same listening socket
and whichever wakes first accepts. A keep-alive client keeps that worker for the connection's life,
and on Linux the choice is lopsided: with `bench`'s seven client connections and two workers, one
worker often held five or six of them and ran at its core's limit beside a half-idle one (README,
Performance; gunicorn's issues 1984, 2095 and 3105 report the same). These workers keep each one's
count of open connections in a table of shared memory, made in gunicorn's arbiter when it imports
this module and inherited by every worker it forks. A worker listens only while it holds no more
connections than the least loaded live worker, so the least loaded one always listens and a new
connection always has a taker. A worker that has not written its entry for STALE_AFTER seconds
(stopped, stuck, killed) is left out, so it cannot hold the others back. Where the table is not
shared (this module first imported in a worker), each worker sees only itself and accepts as
gunicorn's own worker does.

`serve` and `bench` run `gevent_worker.GeventWorker` and `gthread_worker.ThreadWorker`
(queues/management/gunicorn.py); `WONDERQ_WORKER_CLASS` still names `gevent` or `gthread`. They are
two modules so that a gthread server's arbiter does not import gevent.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import time
from collections.abc import Iterable

TICK = 0.01  # how often a worker writes its entry and looks at the others' even when nothing happens
STALE_AFTER = 2.0  # an entry older than this is a worker that cannot serve: left out

_ENTRY = struct.Struct("qqd")  # pid, open connections, time.monotonic() of the write


def may_accept(own: int, others: Iterable[int]) -> bool:
    """Whether a worker holding `own` connections takes another, beside live workers holding `others`."""
    fewest = min(others, default=None)
    return fewest is None or own <= fewest


class ConnectionTable:
    """Each live worker's pid and count of open connections, in memory shared with its siblings."""

    def __init__(self, slots: int = 64) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, slots * _ENTRY.size)  # anonymous and MAP_SHARED: forked children share it
        self._claiming = multiprocessing.get_context("fork").Lock()

    def _read(self, slot: int) -> tuple[int, int, float]:
        return _ENTRY.unpack_from(self._memory, slot * _ENTRY.size)

    def claim(self, pid: int) -> int:
        """A slot for worker `pid`: a free one, or one whose worker stopped writing to it."""
        with self._claiming:
            now = time.monotonic()
            for slot in range(self.slots):
                owner, _, written = self._read(slot)
                if owner == 0 or now - written > STALE_AFTER:
                    self.write(slot, pid, 0)
                    return slot
        raise RuntimeError(f"more than {self.slots} live gunicorn workers")

    def write(self, slot: int, pid: int, connections: int) -> None:
        _ENTRY.pack_into(self._memory, slot * _ENTRY.size, pid, connections, time.monotonic())

    def release(self, slot: int) -> None:
        _ENTRY.pack_into(self._memory, slot * _ENTRY.size, 0, 0, 0.0)

    def others(self, slot: int) -> list[int]:
        """The open connections of every other worker that wrote its entry in the last STALE_AFTER seconds."""
        now = time.monotonic()
        return [
            connections
            for other, (owner, connections, written) in enumerate(_ENTRY.iter_unpack(self._memory))
            if other != slot and owner and now - written <= STALE_AFTER
        ]


TABLE = ConnectionTable()


class Balanced:
    """What both workers share: their slot in TABLE, written on every change and at least every TICK."""

    def _join_table(self) -> None:
        self._slot = TABLE.claim(os.getpid())

    def _publish(self, connections: int) -> bool:
        """Write our count; whether we may take another connection now."""
        TABLE.write(self._slot, os.getpid(), connections)
        return may_accept(connections, TABLE.others(self._slot))

    def _leave_table(self) -> None:
        TABLE.release(self._slot)
