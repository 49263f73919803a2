"""API tokens: created with the key shown once, stored as a digest, revocable.

Authentication is cached for AUTH_CACHE_SECONDS (default 5 s) so a request does not
cost a query; a revoked or expired token stops working within that time (at once in
the process that revoked it). The cache has two levels: a dict in each process, so a
request costs no round trip either, and the shared cache, so a cluster looks a token
up once per lifetime. Both keep the deadline of the first lookup, so no entry outlives it.
"""

from __future__ import annotations

import datetime as dt
import time

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from queues.conf import app_settings
from queues.models import ApiToken

_CACHE_PREFIX = "wq:auth:"
_MISSING = "missing"
# digest -> (deadline as a Unix time, token or None). Bounded: random keys cannot grow it.
_local: dict[str, tuple[float, ApiToken | None]] = {}
_LOCAL_MAX = 10_000


def token_cache_clear() -> None:
    """Forget every cached authentication in this process (tests; the shared cache has its own clear)."""
    _local.clear()


def token_create(*, user, name: str, expires_at: dt.datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the key, which is never stored."""
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_prefix=key[: len(ApiToken.PREFIX) + 6],
        digest=ApiToken.digest_of(key),
        expires_at=expires_at,
    )
    return token, key


def token_revoke(*, token: ApiToken, now: dt.datetime | None = None) -> bool:
    """Active -> revoked; False when it was revoked already."""
    now = now or timezone.now()
    revoked = bool(ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now))
    cache.delete(_CACHE_PREFIX + token.digest)
    _local.pop(token.digest, None)
    return revoked


def _lookup(digest: str, now: dt.datetime) -> ApiToken | None:
    return ApiToken.objects.active(now=now).select_related("user").filter(digest=digest, user__is_active=True).first()


def token_authenticate(*, key: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The active token with this key, or None; served from the caches for a few seconds."""
    now = now or timezone.now()
    digest = ApiToken.digest_of(key)
    wall = time.time()
    entry = _local.get(digest)
    if entry is None or entry[0] <= wall:
        entry = _shared_lookup(digest, now, wall)
        if len(_local) >= _LOCAL_MAX:
            _local.clear()
        _local[digest] = entry
    token = entry[1]
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        return None
    return token


def token_known(*, key: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The token if this process has it cached as valid, else None; never a query or a round trip."""
    entry = _local.get(ApiToken.digest_of(key))
    if entry is None or entry[0] <= time.time() or entry[1] is None:
        return None
    token = entry[1]
    now = now or timezone.now()
    return None if token.expires_at is not None and token.expires_at <= now else token


def _shared_lookup(digest: str, now: dt.datetime, wall: float) -> tuple[float, ApiToken | None]:
    cached = cache.get(_CACHE_PREFIX + digest)
    if isinstance(cached, tuple) and cached[0] > wall:
        deadline, token = cached
        return deadline, None if token == _MISSING else token
    token = _lookup(digest, now)
    ttl = app_settings.AUTH_CACHE_SECONDS
    cache.set(_CACHE_PREFIX + digest, (wall + ttl, token or _MISSING), ttl)
    if token is not None:
        _touch(token, now)
    return wall + ttl, token


def _touch(token: ApiToken, now: dt.datetime) -> None:
    """Record use at most once a minute per token: one small write, not one per request."""
    stale = now - dt.timedelta(seconds=60)
    if token.last_used_at is None or token.last_used_at < stale:
        ApiToken.objects.filter(pk=token.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)).update(
            last_used_at=now
        )
        token.last_used_at = now
