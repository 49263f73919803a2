"""What the shared cache (Redis, with REDIS_URL) raises when it cannot be reached, and how long to leave it.

The cache holds nothing of the queues' state: authentication entries (the database is the
source of truth) and rate-limit counters. So an unreachable Redis must not turn requests into
500s: authentication falls back to the database, and the limits answer 503 or admit requests
uncounted (queues.api.throttling, `WONDERQ_RATELIMIT_FAIL_OPEN`).

After a failure a process leaves Redis alone for LEAVE_FOR seconds and acts as if each call had
failed. A Redis that accepts connections and never answers costs a call its socket timeout (1 s,
settings.CACHES): without the pause every request waited that long, and the rate counter's lock
queued the others behind it.
"""

from __future__ import annotations

import logging
import sys
import time

LEAVE_FOR = 5.0  # seconds without a call to Redis after one failed, per process
_WARN_EVERY = 10.0  # seconds: an outage under load would otherwise log a line per request
_down_until = [0.0]
_warned = [-_WARN_EVERY]
logger = logging.getLogger("queues.cache")


def cache_errors() -> tuple[type[BaseException], ...]:
    """What the shared cache raises when it cannot be reached: redis-py's own errors (the rate-limit
    script talks to it directly) and django-redis's wrapper.

    Their modules are taken from those already loaded, not imported here: only a Redis cache loads
    them, and on SQLite's default (no Redis) importing them cost each worker 8 MiB. Where they are not
    loaded, nothing can raise them. Called in `except` clauses, so only once an error is being handled.
    """
    errors = []
    if (redis_exceptions := sys.modules.get("redis.exceptions")) is not None:
        errors.append(redis_exceptions.RedisError)
    if (django_redis_exceptions := sys.modules.get("django_redis.exceptions")) is not None:
        errors.append(django_redis_exceptions.ConnectionInterrupted)
    return tuple(errors)


def cache_down() -> bool:
    """Whether a call to the shared cache failed less than LEAVE_FOR seconds ago in this process."""
    return time.monotonic() < _down_until[0]


def cache_unreachable(error: BaseException, consequence: str) -> None:
    """Note a failed call (leave Redis alone for LEAVE_FOR s) and log it, at most once every _WARN_EVERY s."""
    now = time.monotonic()
    _down_until[0] = now + LEAVE_FOR
    if now - _warned[0] >= _WARN_EVERY:
        _warned[0] = now
        logger.warning("The shared cache (REDIS_URL) cannot be reached (%s): %s.", error, consequence)


def cache_reset() -> None:
    """Forget a failure (tests, and a settings change to another cache)."""
    _down_until[0] = 0.0
