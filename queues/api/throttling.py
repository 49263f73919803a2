"""Rate limits on django-ratelimit's counters, so every process sharing the cache (Redis) shares them.

Over a limit DRF answers 429 with `Retry-After` (the seconds until the window ends),
not django-ratelimit's 403.

Keys and windows are django-ratelimit's (a fixed window per key, its end jittered per key).
On Redis a count is one round trip: a script increments the key and gives it its expiry
if it has none, where django-ratelimit's `get_usage` makes two (`add`, then `incr`). Other
caches (the embedded default's process-local one) go through `get_usage` itself.

Every API request is counted against its token, so even that one round trip was a fifth
of a hot request's time. A process therefore takes a token's budget from the cache in
slices of 1% of the limit and spends them locally (`token_usage`). The shared count still covers
every admitted request, so no window ever admits more than the limit; a slice a process
took and did not spend before the window ended is budget lost, at most 1% of the limit
per process. Limits under 200 a window are counted request by request, as before.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
import time

from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import EXPIRATION_FUDGE, _get_ip, _get_window, _make_cache_key, _split_rate, get_usage
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled
from rest_framework.throttling import BaseThrottle

from queues.conf import app_settings
from queues.services._cache import cache_down, cache_errors, cache_reset, cache_unreachable

API_GROUP, AUTH_FAIL_GROUP = "wonderq.api", "wonderq.auth-fail"

# KEYS[1]: the counter; ARGV[1]: how much to add (0 reads it); ARGV[2]: its lifetime in seconds.
_COUNT_SCRIPT = """
local count
if tonumber(ARGV[1]) > 0 then
  count = redis.call('INCRBY', KEYS[1], ARGV[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
else
  count = tonumber(redis.call('GET', KEYS[1]) or '0')
end
return count
"""
_script = None


@receiver(setting_changed)
def _forget_script(*, setting, **kwargs):
    global _script
    if setting in ("CACHES", "RATELIMIT_ENABLE", "WONDERQ_RATE_PER_TOKEN"):
        _script = None
        _slices.clear()
        cache_reset()


def _redis_script():
    """The counting script on the default cache's Redis, or None when the cache is not django-redis."""
    global _script
    if _script is None:
        # Made first, so a django-redis cache has loaded its module: without Redis (SQLite's default) a
        # worker never loads its client (queues.services._cache.cache_errors).
        cache = caches["default"]
        redis_cache = sys.modules.get("django_redis.cache")
        if redis_cache is None or not isinstance(cache, redis_cache.RedisCache):
            _script = False
        else:
            from django_redis import get_redis_connection

            _script = get_redis_connection("default").register_script(_COUNT_SCRIPT)
    return _script or None


def _add(key: str, amount: int, lifetime: int) -> int:
    """Add `amount` to django-ratelimit's counter `key` (0 reads it); its new value."""
    script = _redis_script()
    if script is not None:
        return int(script(keys=[caches["default"].make_key(key)], args=[amount, lifetime]))
    cache = caches["default"]
    cache.add(key, 0, lifetime)
    return cache.incr(key, amount) if amount else cache.get(key, 0)


class CountersUnavailable(APIException):
    """The rate-limit counters (Redis) cannot be reached and limits fail closed: nothing was done."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The rate-limit counters (Redis) cannot be reached, so the request was refused and nothing was done. "
        "Retry shortly."
    )
    default_code = "unavailable"


def _counted(key: str, amount: int, lifetime: int) -> int | None:
    """`_add`; when Redis cannot be reached, None (admit uncounted) under RATELIMIT_FAIL_OPEN, else a 503.

    Once a call failed, Redis is left alone for a few seconds (queues.services._cache) and the
    answer is the same at once: a Redis that never answers would cost each request 1 s.
    """
    fail_open = getattr(settings, "RATELIMIT_FAIL_OPEN", False)
    if not cache_down():
        try:
            return _add(key, amount, lifetime)
        except cache_errors() as error:
            cache_unreachable(
                error,
                "requests are admitted without rate limits (WONDERQ_RATELIMIT_FAIL_OPEN)"
                if fail_open
                else "rate-limited requests answer 503 (WONDERQ_RATELIMIT_FAIL_OPEN=1 admits them)",
            )
    if fail_open:
        return None
    raise CountersUnavailable


def usage(request, *, group: str, ident: str, rate: str, increment: bool) -> dict | None:
    """django-ratelimit's usage dict (count, limit, should_limit, time_left) for `ident` in `group`."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    if _redis_script() is None:
        return get_usage(request, group=group, key=lambda _group, _request: ident, rate=rate, increment=increment)
    limit, period = _split_rate(rate)
    window = _get_window(ident, period)
    # method=ALL as get_usage is called: the key ends in an empty method list.
    key = _make_cache_key(group, window, rate, ident, "")
    count = _counted(key, 1 if increment else 0, period + EXPIRATION_FUDGE)
    if count is None:
        return None
    return {"count": count, "limit": limit, "should_limit": count > limit, "time_left": window - int(time.time())}


# Budget slices this process holds: counter key -> requests it may still admit in that key's window.
_slices: dict[str, int] = {}
_slices_lock = threading.Lock()
_SLICES_MAX = 10_000
_SPENT = -1


def rate_slices_clear() -> None:
    """Forget the budget slices this process holds (tests; the budget they held is lost)."""
    with _slices_lock:
        _slices.clear()


def token_usage(request, token_pk) -> dict | None:
    """Count one request against a token's budget: {should_limit, time_left, limit}."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    ident, rate = f"token:{token_pk}", app_settings.RATE_PER_TOKEN
    limit, period = _split_rate(rate)
    size = limit // 100
    if size < 2:
        return usage(request, group=API_GROUP, ident=ident, rate=rate, increment=True)
    window = _get_window(ident, period)
    key = _make_cache_key(API_GROUP, window, rate, ident, "")
    with _slices_lock:
        left = _slices.get(key, 0)
        if left == 0:
            # One count for the next `size` requests; while it runs, this process's other
            # threads wait for the slice rather than each taking one.
            total = _counted(key, size, period + EXPIRATION_FUDGE)
            if total is None:
                return None
            left = max(0, min(size, limit - (total - size)))
            if len(_slices) >= _SLICES_MAX:
                _slices.clear()  # old windows' slices; dropping a live one only loses budget
            if left == 0:
                # The window's budget is spent for good: refuse the rest without a round trip.
                _slices[key] = left = _SPENT
        if left > 0:
            _slices[key] = left - 1
    return {"limit": limit, "should_limit": left <= 0, "time_left": window - int(time.time())}


class TokenRateThrottle(BaseThrottle):
    """WONDERQ_RATE_PER_TOKEN per API token (per user for a signed-in session, per address otherwise)."""

    def allow_request(self, request, view) -> bool:
        counted = getattr(request._request, "wonderq_rate_usage", False)
        if counted is not False:
            # The hot path already counted this request (see queues.api.hotpath): never twice.
            result = counted
        elif request.auth is not None and hasattr(request.auth, "pk"):
            result = token_usage(request, request.auth.pk)
        else:
            if request.user and request.user.is_authenticated:
                ident, rate = f"user:{request.user.pk}", app_settings.RATE_PER_TOKEN
            else:
                ident, rate = f"ip:{_address(request)}", app_settings.RATE_ANONYMOUS
            result = usage(request, group=API_GROUP, ident=ident, rate=rate, increment=True)
        self.time_left = result["time_left"] if result else 0
        return not (result and result["should_limit"])

    def wait(self) -> float:
        return max(1, self.time_left)


def _address(request) -> str:
    """The client's address as the limits count it: IPv6 addresses by their /64, as django-ratelimit does.

    Behind a proxy every client arrives from the proxy's address. With WONDERQ_CLIENT_ADDRESS_HEADER
    set, the last address in that header is the client's: the one the proxy you run saw and
    appended (what a client writes there itself comes before it). A header missing or not an
    address falls back to the connection's. gunicorn on a unix socket leaves REMOTE_ADDR empty,
    where django-ratelimit raises: such clients share one budget, as they share the proxy's address.
    """
    meta = request.META
    header = app_settings.CLIENT_ADDRESS_HEADER
    if header:
        address = _ip(meta.get(header, "").rpartition(",")[2])
        if address:
            return address
    elif getattr(settings, "RATELIMIT_IP_META_KEY", None):
        return _get_ip(request)
    return _ip(meta.get("REMOTE_ADDR", "")) or "no-address"


def _ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def failed_auth_check(request) -> None:
    """Refuse an address that has failed authentication too often (before even looking the key up)."""
    result = usage(
        request, group=AUTH_FAIL_GROUP, ident=_address(request), rate=app_settings.RATE_FAILED_AUTH, increment=False
    )
    # Not incremented here, so the budget is spent once the count reaches the limit.
    if result and result["count"] >= result["limit"]:
        raise Throttled(wait=max(1, result["time_left"]), detail="Too many failed authentication attempts.")


def failed_auth_count(request) -> None:
    """Count one failed authentication against the client's address."""
    usage(request, group=AUTH_FAIL_GROUP, ident=_address(request), rate=app_settings.RATE_FAILED_AUTH, increment=True)
