"""A gunicorn gevent worker that shares connections out evenly: it takes one only while it holds the fewest.

gunicorn leaves the choice of worker to the kernel: every worker waits on the same listening socket
and whichever wakes first accepts. A keep-alive client keeps that worker for the connection's life,
and on Linux the choice is lopsided: eight connections opened together all went to one of two
workers in most tries (tests/test_workers.py), and with `bench`'s seven one worker often held five
or six and ran at its core's limit beside a half-idle one (README, Performance; gunicorn's issues
1984, 2095 and 3105 report the same). This worker keeps each worker's count of open connections in
a table of shared memory, made in gunicorn's arbiter when it imports this module and inherited by
every worker it forks. A worker listens only while it holds no more connections than the least
loaded live worker, so the least loaded one always listens and a new connection always has a
taker. A worker that has not written its entry for STALE_AFTER seconds (stopped, stuck, killed) is
left out, so it cannot hold the others back; only the seconds its reader was running count, so a
pause of the whole machine, which stops every worker at once, makes none of them look stuck. A
worker enters the table only once its app is loaded and it is about to listen, and leaves it as
soon as it stops listening. Where the table is not shared (this module first imported in a
worker) or is full, a worker accepts as gunicorn's own worker does.

`serve` and `bench` run it for `WONDERQ_WORKER_CLASS=gevent` (queues/management/gunicorn.py).
SQLite's `gthread` stays gunicorn's own: there every write waits for SQLite's one lock, and the
same sharing measured no gain in interleaved runs (README, Performance).
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct
import time
from collections.abc import Iterable
from functools import partial

from gunicorn.workers import ggevent

TICK = 0.01  # how often a worker writes its entry and looks at the others' even when nothing happens
STALE_AFTER = 2.0  # an entry older than this is a worker that cannot serve: left out
PAUSED_AFTER = 0.25  # a longer gap between a worker's own writes is a pause: it was not watching the others

_ENTRY = struct.Struct("qqd")  # pid, open connections, time.monotonic() of the write


def may_accept(own: int, others: Iterable[int]) -> bool:
    """Whether a worker holding `own` connections takes another, beside live workers holding `others`."""
    fewest = min(others, default=None)
    return fewest is None or own <= fewest


class ConnectionTable:
    """Each live worker's pid and count of open connections, in memory shared with its siblings."""

    def __init__(self, slots: int = 256) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, slots * _ENTRY.size)  # anonymous and MAP_SHARED: forked children share it
        self._claiming = multiprocessing.get_context("fork").Lock()

    def _read(self, slot: int) -> tuple[int, int, float]:
        return _ENTRY.unpack_from(self._memory, slot * _ENTRY.size)

    def claim(self, pid: int) -> int | None:
        """A slot for worker `pid`: a free one, or one whose worker stopped writing to it; None if all are taken.

        Claims take turns on a lock, but not forever: a worker killed while holding it (SIGKILL, the
        OOM killer) must not stop every later worker from starting.
        """
        locked = self._claiming.acquire(timeout=1)
        try:
            now = time.monotonic()
            for slot in range(self.slots):
                owner, _, written = self._read(slot)
                if owner == 0 or now - written > STALE_AFTER:
                    self.write(slot, pid, 0)
                    return slot
            return None
        finally:
            if locked:
                self._claiming.release()

    def write(self, slot: int, pid: int, connections: int) -> None:
        _ENTRY.pack_into(self._memory, slot * _ENTRY.size, pid, connections, time.monotonic())

    def release(self, slot: int, pid: int) -> None:
        """Free `slot`, unless another worker took it over while `pid` was stuck."""
        if self._read(slot)[0] == pid:
            _ENTRY.pack_into(self._memory, slot * _ENTRY.size, 0, 0, 0.0)

    def others(self, slot: int | None, paused: tuple[float, float] = (0.0, 0.0)) -> list[int]:
        """The open connections of every other worker that wrote its entry in the last STALE_AFTER seconds.

        `paused` is the caller's own last pause (its start and end, on the monotonic clock): a
        silence during it went unwatched and does not count. A whole VM paused stops every worker
        at once; without this, the first to wake would find every other entry stale and take every
        waiting connection itself (CI saw 7 of 8).
        """
        now = time.monotonic()
        start, end = paused
        return [
            connections
            for other, (owner, connections, written) in enumerate(_ENTRY.iter_unpack(self._memory))
            if other != slot and owner and now - written - max(0.0, end - max(start, written)) <= STALE_AFTER
        ]


TABLE = ConnectionTable()


class _Server(ggevent.StreamServer):
    """A StreamServer that tells its worker when it accepts a connection and when it closes it.

    gevent calls do_close exactly once for every connection do_handle was given: after the
    handler, when spawning it fails, and when an SSL handshake fails before the handler runs.
    """

    def __init__(self, *args, worker: GeventWorker, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._worker = worker

    def do_handle(self, *args) -> None:
        self._worker._opened(1)
        super().do_handle(*args)  # spawns the handler in the pool

    def do_close(self, *args) -> None:
        try:
            super().do_close(*args)
        finally:
            self._worker._opened(-1)


class GeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker; it listens only while it holds the fewest connections."""

    def init_process(self) -> None:
        self._slot: int | None = None  # claimed in run(), once the app is loaded and we are about to listen
        self._written = (-1, 0.0, True)  # the count last written, when, and whether it could accept then
        self._paused = (0.0, 0.0)  # our own last pause: from our write before it to our write after it
        self._open = 0
        self._servers: list = []
        super().init_process()  # loads the app, then run()

    def _publish(self) -> bool:
        """Write our count (on a change, or TICK after the last write); whether we may take another connection."""
        if self._slot is None:  # not in the table (yet, any more, or it was full): accept as gunicorn's own would
            return True
        count, written, fair = self._written
        now = time.monotonic()
        if self._open != count or now - written >= TICK:
            if written and now - written > PAUSED_AFTER:  # we were stopped, or our hub was blocked
                self._paused = (written, now)
            TABLE.write(self._slot, self.pid, self._open)
            fair = may_accept(self._open, TABLE.others(self._slot, self._paused))
            self._written = (self._open, now, fair)
        return fair

    def _opened(self, change: int) -> None:
        self._open += change
        self._balance()

    def _balance(self) -> None:
        accept = self._publish()
        for server in self._servers:
            # gevent's own pause (a full pool) and ours both go through _watcher: look at it, not at a flag.
            if server.closed or accept == (server._watcher is not None):
                continue
            if accept:
                server.start_accepting()
            else:
                server.stop_accepting()

    def _balancing(self) -> None:
        while self.alive:
            self._balance()
            ggevent.gevent.sleep(TICK)

    def _leave_table(self) -> None:
        """Stop counting: a stopping worker no longer listens, so its count must not hold the others back."""
        if self._slot is not None:
            TABLE.release(self._slot, self.pid)
            self._slot = None

    def run(self) -> None:
        """gunicorn 27's GeventWorker.run for a plain gevent worker, keeping the servers so they can pause."""
        self._slot = TABLE.claim(self.pid)
        if self._slot is None:
            self.log.warning("More than %s live workers: this one accepts without sharing out.", TABLE.slots)
        try:
            self._serve()
        finally:
            self._leave_table()

    def _serve(self) -> None:
        ssl_args = {"ssl_context": ggevent.ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for sock in self.sockets:
            sock.setblocking(1)
            server = _Server(
                sock,
                handle=partial(self.handle, sock),
                spawn=ggevent.Pool(self.worker_connections),
                worker=self,
                **ssl_args,
            )
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            self._servers.append(server)
        balancing = ggevent.gevent.spawn(self._balancing)

        while self.alive:
            self.notify()
            ggevent.gevent.sleep(1.0)

        balancing.kill()
        self._leave_table()
        try:
            for server in self._servers:
                server.close()  # stop accepting
            deadline = time.time() + self.cfg.graceful_timeout
            while time.time() <= deadline:  # let current requests finish
                if all(server.pool.free_count() == server.pool.size for server in self._servers):
                    return
                self.notify()
                ggevent.gevent.sleep(1.0)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in self._servers:
                server.stop(timeout=1)
        except Exception:
            self.log.exception("Error while stopping worker (pid:%s)", self.pid)
