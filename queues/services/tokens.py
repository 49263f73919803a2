"""API tokens: created with the key shown once, stored as a digest, revocable.

Authentication is cached for AUTH_CACHE_SECONDS (default 5 s) so a request does not
cost a query; a revoked or expired token stops working within that time (at once in
the process that revoked it). The cache has two levels: a dict in each process, so a
request costs no round trip either, and the shared cache, so a cluster looks a token
up once per lifetime. Both keep the deadline of the first lookup, so no entry outlives it.

Entries are renewed ahead of their deadline: in the last fifth of an entry's lifetime the
first request a process serves with it renews it (the shared cache, or a lookup when that
entry is near its end too), while the process's other requests go on using it. Without
that, every request in flight when the deadline passed, in every process at once (they
share the deadline), missed the cache together and took the lookup and the full request
stack: a burst of slow requests every AUTH_CACHE_SECONDS. A revoked token still stops
within AUTH_CACHE_SECONDS, as no entry is used past its deadline.
"""

from __future__ import annotations

import datetime as dt
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save, pre_delete
from django.utils import timezone

from queues.conf import app_settings
from queues.models import ApiToken
from queues.services._cache import cache_down, cache_errors, cache_unreachable

_CACHE_PREFIX = "wq:auth:"
_MISSING = "missing"
# digest -> (deadline as a Unix time, when to renew it, token or None). Bounded: random keys
# cannot grow it.
_local: dict[str, tuple[float, float, ApiToken | None]] = {}
_LOCAL_MAX = 10_000
# The part of an entry's lifetime, at its end, in which a request renews it.
_RENEW_AHEAD = 0.2


# Bumped by every invalidation in this process: a lookup that ran across one keeps nothing it read.
_generation = [0]


def token_cache_clear() -> None:
    """Forget every cached authentication in this process (tests; the shared cache has its own clear)."""
    _generation[0] += 1
    _local.clear()


def _forget(digests) -> None:
    _generation[0] += 1
    for digest in digests:
        _local.pop(digest, None)
    if cache_down():
        return  # the shared entries expire within AUTH_CACHE_SECONDS on their own
    try:
        cache.delete_many([_CACHE_PREFIX + digest for digest in digests])
    except cache_errors() as error:
        # Other processes keep what they read for at most AUTH_CACHE_SECONDS, as always; so does Redis.
        cache_unreachable(error, "a revoked or changed token's shared entry was left to expire")


def tokens_forget_user(*, user_id) -> None:
    """Drop a user's cached authentications here and in the shared cache: their account changed or is going.

    Each entry carries the user as it was looked up (active, staff), so a change applies at once
    in the process that made it, and in the others when their own entries run out (AUTH_CACHE_SECONDS).
    Inside a transaction, again at its commit: a request meanwhile may have cached the old user.
    """
    digests = list(ApiToken.objects.filter(user_id=user_id).values_list("digest", flat=True))
    digests += [digest for digest, (_, _, token) in list(_local.items()) if token and token.user_id == user_id]
    _forget(digests)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _forget(digests))


def _user_saved(sender, instance, update_fields=None, **_signal) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a sign-in: nothing a token's authentication depends on
    tokens_forget_user(user_id=instance.pk)


def _user_deleted(sender, instance, **_signal) -> None:
    tokens_forget_user(user_id=instance.pk)  # before the delete, while the tokens' rows still name them


def _token_deleted(sender, instance, **_signal) -> None:
    _forget([instance.digest])


post_save.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="wonderq_tokens_user_saved")
pre_delete.connect(_user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="wonderq_tokens_user_deleted")
post_delete.connect(_token_deleted, sender=ApiToken, dispatch_uid="wonderq_tokens_token_deleted")


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
    _forget([token.digest])
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
        return _valid(_renew(digest, now, wall), now)
    return _valid(_renew(digest, now, wall, ahead_of=entry) if entry[1] <= wall else entry[2], now)


def token_known(*, key: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The token if this process has it cached as valid, else None.

    Never a lookup for a key not cached as valid: that is for `token_authenticate`, behind the
    failed-authentication budget. A valid entry due for renewal is renewed here, by one request.
    """
    digest = ApiToken.digest_of(key)
    entry = _local.get(digest)
    wall = time.time()
    if entry is None or entry[0] <= wall or entry[2] is None:
        return None
    now = now or timezone.now()
    return _valid(_renew(digest, now, wall, ahead_of=entry) if entry[1] <= wall else entry[2], now)


def _valid(token: ApiToken | None, now: dt.datetime) -> ApiToken | None:
    return None if token is None or (token.expires_at is not None and token.expires_at <= now) else token


def _renew(digest: str, now: dt.datetime, wall: float, *, ahead_of: tuple | None = None) -> ApiToken | None:
    """Look the token up again, from the shared cache if it has an entry good for a while yet.

    `ahead_of`: this process's entry, still valid. It stays in use meanwhile, and no other
    request of this process renews it: the claim is the entry's renewal time set to never,
    made before any I/O, so a green thread that runs while this one waits finds nothing to claim.
    """
    if ahead_of is not None:
        _local[digest] = (ahead_of[0], math.inf, ahead_of[2])
    ttl = app_settings.AUTH_CACHE_SECONDS
    generation = _generation[0]
    cached = shared = None
    if not cache_down():
        try:
            cached = cache.get(_CACHE_PREFIX + digest)
        except cache_errors() as error:
            cache_unreachable(error, "tokens are looked up in the database")
        else:
            shared = cache
    if isinstance(cached, tuple) and cached[0] > wall + ttl * _RENEW_AHEAD:
        deadline, token = cached
        token = None if token == _MISSING else token
    else:
        token = _lookup(digest, now)
        deadline = wall + ttl
        if generation == _generation[0] and shared is not None:
            try:
                shared.set(_CACHE_PREFIX + digest, (deadline, token or _MISSING), ttl)
            except cache_errors() as error:
                cache_unreachable(error, "tokens are looked up in the database")
        if token is not None:
            _touch(token, now)
    if generation != _generation[0]:
        # Revoked or changed in this process while this ran (another green thread): what was read
        # may be from before that, so it answers this request, which began first, but is not kept.
        return token
    if len(_local) >= _LOCAL_MAX:
        _local.clear()
    _local[digest] = (deadline, deadline - ttl * _RENEW_AHEAD, token)
    return token


def _touch(token: ApiToken, now: dt.datetime) -> None:
    """Record use at most once a minute per token: one small write, not one per request."""
    stale = now - dt.timedelta(seconds=60)
    if token.last_used_at is None or token.last_used_at < stale:
        ApiToken.objects.filter(pk=token.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)).update(
            last_used_at=now
        )
        token.last_used_at = now
