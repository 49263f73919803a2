"""What the shared cache (Redis, with REDIS_URL) raises when it cannot be reached, and a warning about it.

The cache holds nothing of the queues' state: authentication entries (the database is the
source of truth) and rate-limit counters. So an unreachable Redis must not turn requests into
500s: authentication falls back to the database, and the limits answer 503 or admit requests
uncounted (queues.api.throttling, `WONDERQ_RATELIMIT_FAIL_OPEN`).
"""

from __future__ import annotations

import logging
import time

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

# redis-py's own errors (the rate-limit script talks to it directly), and django-redis's wrapper.
CACHE_ERRORS = (RedisError, ConnectionInterrupted)

_WARN_EVERY = 10.0  # seconds: an outage under load would otherwise log a line per request
_warned = [-_WARN_EVERY]
logger = logging.getLogger("queues.cache")


def cache_unreachable(error: BaseException, consequence: str) -> None:
    """Log that the shared cache failed and what was done instead, at most once every _WARN_EVERY s."""
    now = time.monotonic()
    if now - _warned[0] >= _WARN_EVERY:
        _warned[0] = now
        logger.warning("The shared cache (REDIS_URL) cannot be reached (%s): %s.", error, consequence)
