"""PostgreSQL with a pool that checks a connection only when it has sat unused.

Django's pool option checks every connection with an empty query before lending it
(CONN_HEALTH_CHECKS), a round trip on every request: 10-20% of the throughput of small
requests. Without any check, a connection that died while it sat in the pool (a database
restart, an idle timeout on the server or a firewall) fails the next request that gets it.

Here, as connection pools such as HikariCP do, a connection lent within the last
WONDERQ_DB_CHECK_AFTER_IDLE seconds (default 1) is lent without a check: under load every
connection is in constant use and none is checked; one that sat idle longer is checked
first and, if dead, replaced before any request sees it. A connection that breaks while
in use is dropped when it comes back to the pool.

One lost connection usually means its siblings are lost too: a restart or a failover ends
every session at once. So once a process has seen a connection broken (a request's, or one
the check found dead), every connection lent before that moment is checked on its next loan,
whenever it was last lent: after a restart, a process's first request on a dead connection
fails (503, queues.api.errors) and the next ones get live connections, where each pooled
connection used to fail one request of its own.
"""

from __future__ import annotations

import math
import os
import time

from django.db.backends.postgresql import base

try:
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - psycopg[pool] is a runtime dependency
    ConnectionPool = None


# When this process last saw a pooled connection broken (time.monotonic()).
_lost_at = -math.inf


def connection_lost() -> None:
    """Check every pooled connection lent before now on its next loan: its session may have ended too."""
    global _lost_at
    _lost_at = time.monotonic()


def _check_after_idle(seconds: float):
    def check(connection) -> None:
        now = time.monotonic()
        lent_before = getattr(connection, "_wonderq_lent_at", None)
        connection._wonderq_lent_at = now
        if lent_before is None or now - lent_before >= seconds or lent_before <= _lost_at:
            try:
                ConnectionPool.check_connection(connection)
            except Exception:
                connection_lost()  # the pool drops this one and lends another, to be checked in turn
                raise

    check.__qualname__ = check.__name__ = "check_after_idle"
    return check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        idle = self.settings_dict.get("CHECK_AFTER_IDLE")
        # Django hands the pool ConnectionPool.check_connection when CONN_HEALTH_CHECKS is on.
        if pool is not None and idle is not None and pool._check is ConnectionPool.check_connection:
            pool._check = _check_after_idle(idle)
        return pool

    def _close(self):
        # Called as each request ends, when the connection goes back to the pool (which drops a broken one).
        if self.pool and self.connection is not None and self.connection.broken:
            connection_lost()
        super()._close()


def _forget_inherited_connections() -> None:
    """In a forked child, drop the parent's pool and connections without closing them.

    django-q2 forks its pusher, workers and monitor from a process that has already used
    the database. A child that used the inherited pool would share the parent's sockets:
    two processes talking over one PostgreSQL connection read each other's results
    ("the last operation didn't produce records (command status: BEGIN)"). Closing them
    here would end the parent's sessions too, so the child just lets go of them (their
    threads did not survive the fork) and opens its own.
    """
    from django.db import connections

    DatabaseWrapper._connection_pools = {}
    for wrapper in connections.all(initialized_only=True):
        if isinstance(wrapper, DatabaseWrapper):
            wrapper.connection = None


os.register_at_fork(after_in_child=_forget_inherited_connections)
