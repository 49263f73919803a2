"""API tokens: created with the key shown once, stored as a digest, revocable."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from queues.models import ApiToken


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
    return bool(ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now))


def token_authenticate(*, key: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The active token with this key, or None."""
    now = now or timezone.now()
    return (
        ApiToken.objects.active(now=now)
        .select_related("user")
        .filter(digest=ApiToken.digest_of(key), user__is_active=True)
        .first()
    )
