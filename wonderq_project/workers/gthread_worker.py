"""gunicorn's gthread worker, listening only while it holds the fewest connections (see wonderq_project.workers)."""

from __future__ import annotations

from gunicorn.workers import gthread

from wonderq_project.workers import TICK, Balanced


class ThreadWorker(Balanced, gthread.ThreadWorker):
    """gunicorn's gthread worker; it listens only while it holds the fewest connections."""

    def init_process(self) -> None:
        self._join_table()
        self._fair = True
        super().init_process()  # ends in run()

    def set_accept_enabled(self, enabled: bool) -> None:
        # run() listens whenever the worker has room; we also want it to hold the fewest connections.
        super().set_accept_enabled(enabled and self._fair)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        room = self.nr_conns < self.worker_connections
        if self.alive:
            self._fair = self._publish(self.nr_conns)
            self.set_accept_enabled(room)
        super().wait_for_and_dispatch_events(min(timeout, TICK))

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._leave_table()
