"""Rate limits on django-ratelimit's counters, so every process sharing the cache (Redis) shares them.

Over a limit DRF answers 429 with `Retry-After` (the seconds until the window ends),
not django-ratelimit's 403.
"""

from __future__ import annotations

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

from queues.conf import app_settings


def _usage(request, *, group: str, key, rate: str, increment: bool) -> dict | None:
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    return get_usage(request, group=group, key=key, rate=rate, increment=increment)


class TokenRateThrottle(BaseThrottle):
    """WONDERQ_RATE_PER_TOKEN per API token (per user for a signed-in session, per address otherwise)."""

    def allow_request(self, request, view) -> bool:
        if request.auth is not None and hasattr(request.auth, "pk"):
            ident, rate = f"token:{request.auth.pk}", app_settings.RATE_PER_TOKEN
        elif request.user and request.user.is_authenticated:
            ident, rate = f"user:{request.user.pk}", app_settings.RATE_PER_TOKEN
        else:
            ident, rate = f"ip:{request.META.get('REMOTE_ADDR', '')}", app_settings.RATE_ANONYMOUS
        usage = _usage(request, group="wonderq.api", key=lambda group, req: ident, rate=rate, increment=True)
        self.time_left = usage["time_left"] if usage else 0
        return not (usage and usage["should_limit"])

    def wait(self) -> float:
        return max(1, self.time_left)


def failed_auth_check(request) -> None:
    """Refuse an address that has failed authentication too often (before even looking the key up)."""
    usage = _usage(request, group="wonderq.auth-fail", key="ip", rate=app_settings.RATE_FAILED_AUTH, increment=False)
    # Not incremented here, so the budget is spent once the count reaches the limit.
    if usage and usage["count"] >= usage["limit"]:
        raise Throttled(wait=max(1, usage["time_left"]), detail="Too many failed authentication attempts.")


def failed_auth_count(request) -> None:
    """Count one failed authentication against the client's address."""
    _usage(request, group="wonderq.auth-fail", key="ip", rate=app_settings.RATE_FAILED_AUTH, increment=True)
