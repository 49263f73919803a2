"""gunicorn's gevent worker, listening only while it holds the fewest connections (see wonderq_project.workers)."""

from __future__ import annotations

import time
from functools import partial

from gunicorn.workers import ggevent

from wonderq_project.workers import TICK, Balanced


class _Server(ggevent.StreamServer):
    """A StreamServer that counts a connection as its worker's the moment it is accepted."""

    def __init__(self, *args, worker: GeventWorker, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._worker = worker

    def do_handle(self, *args) -> None:
        self._worker._opened(1)
        try:
            super().do_handle(*args)  # spawns handle() in the pool
        except BaseException:
            self._worker._opened(-1)
            raise


class GeventWorker(Balanced, ggevent.GeventWorker):
    """gunicorn's gevent worker; it listens only while it holds the fewest connections."""

    def init_process(self) -> None:
        self._join_table()
        self._open = 0
        self._servers: list = []
        super().init_process()  # ends in run()

    def _opened(self, change: int) -> None:
        self._open += change
        self._balance()

    def handle(self, listener, client, addr) -> None:
        try:
            super().handle(listener, client, addr)
        finally:
            self._opened(-1)

    def _balance(self) -> None:
        accept = self._publish(self._open)
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

    def run(self) -> None:
        """gunicorn 27's GeventWorker.run for a plain gevent worker, keeping the servers so they can pause."""
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
