"""API tokens: created with the key shown once, stored as a digest, revocable.

Authentication is cached for AUTH_CACHE_SECONDS (default 5 s) so a request does not
cost a query; a revoked or expired token stops working within that time (at once in
the process, or with a shared cache, the cluster, that revoked it).
"""

from __future__ import annotations

import datetime as dt

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from queues.conf import app_settings
from queues.models import ApiToken

_CACHE_PREFIX = "wq:auth:"
_MISSING = "missing"


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
    return revoked


def _lookup(digest: str, now: dt.datetime) -> ApiToken | None:
    return ApiToken.objects.active(now=now).select_related("user").filter(digest=digest, user__is_active=True).first()


def token_authenticate(*, key: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The active token with this key, or None; served from the cache for a few seconds."""
    now = now or timezone.now()
    digest = ApiToken.digest_of(key)
    cached = cache.get(_CACHE_PREFIX + digest)
    if cached == _MISSING:
        return None
    if cached is not None:
        if cached.expires_at is None or cached.expires_at > now:
            return cached
        return None
    token = _lookup(digest, now)
    ttl = app_settings.AUTH_CACHE_SECONDS
    cache.set(_CACHE_PREFIX + digest, token or _MISSING, ttl)
    if token is not None:
        _touch(token, now)
    return token


def _touch(token: ApiToken, now: dt.datetime) -> None:
    """Record use at most once a minute per token: one small write, not one per request."""
    stale = now - dt.timedelta(seconds=60)
    if token.last_used_at is None or token.last_used_at < stale:
        ApiToken.objects.filter(pk=token.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)).update(
            last_used_at=now
        )
        token.last_used_at = now
