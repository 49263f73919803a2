"""WonderQ's own settings: one object, defaults here, overrides as WONDERQ_* in settings."""

from django.conf import settings

DEFAULTS = {
    "MAX_MESSAGE_BYTES": 256 * 1024,  # UTF-8 bytes of body plus attributes
    "MAX_BATCH": 100,
    "DEFAULT_VISIBILITY_TIMEOUT": 30,
    "MAX_VISIBILITY_TIMEOUT": 12 * 60 * 60,
    "MAX_WAIT_SECONDS": 20,
    "MAX_DELAY_SECONDS": 15 * 60,
    "DEFAULT_MAX_RECEIVES": 5,
    "MAX_RECEIVES_LIMIT": 1000,
    "MAX_ATTRIBUTES": 10,
    # Acked messages are kept this long as tombstones so a retried ack answers "acked".
    "ACKED_RETENTION_SECONDS": 15 * 60,
    "DEDUP_WINDOW_SECONDS": 5 * 60,
    "SWEEP_BATCH": 10_000,
    # PostgreSQL: the hot statements bind on the server and are prepared (see settings).
    "PREPARED_STATEMENTS": True,
    "MAX_JSON_DEPTH": 32,
    "MAX_REQUEST_BYTES": 2 * 1024 * 1024,
    "POLL_INTERVAL": 0.1,  # seconds between tries of a long-polling receive
    # How long a token's authentication is cached; a revoked token works at most this long elsewhere.
    "AUTH_CACHE_SECONDS": 5,
    # How long a process keeps a queue's settings and a user's grant on it for send, receive and
    # ack; a change made elsewhere is seen within this time (0: look them up on every request).
    "QUEUE_CACHE_SECONDS": 1,
    # django-ratelimit rates ("N/s", "N/m", "N/h").
    "RATE_PER_TOKEN": "6000/m",
    "RATE_ANONYMOUS": "120/m",
    "RATE_FAILED_AUTH": "30/m",
    # The request header (as Django's META key) a trusted proxy sets to the client's address; "": none.
    "CLIENT_ADDRESS_HEADER": "",
    "SNAPSHOT_RETENTION_DAYS": 7,
    # Review decisions are kept for good (the audit trail outlives the messages); a number of
    # days makes prune delete older ones.
    "DECISION_RETENTION_DAYS": None,
}


class AppSettings:
    """Attribute access to WONDERQ_* settings with the defaults above."""

    def __getattr__(self, name: str):
        if name not in DEFAULTS:
            raise AttributeError(f"unknown WonderQ setting {name!r}")
        return getattr(settings, f"WONDERQ_{name}", DEFAULTS[name])


app_settings = AppSettings()
