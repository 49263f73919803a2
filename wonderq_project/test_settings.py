"""Settings for the test suite: the real settings, with a throwaway secret key (and, under pytest-xdist,
a Redis database for each worker)."""

import os
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")


def _redis_url_for_xdist_worker(url: str, worker: str) -> str:
    """`url` moved to a Redis database of the worker's own ("gw0" -> the URL's database + 1, ...).

    pytest-xdist gives each worker its own test database, and so the same user and token ids:
    sharing Redis, two workers would count each other's requests against one rate budget, and
    each test's cache.clear() (a FLUSHDB) would wipe what the other worker's test had counted.
    The database is where redis-py reads it: a `db` query value first (the only place a
    unix:// URL has one), else the path.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    in_query = "db" in query or parts.scheme == "unix"
    base = query.get("db", ["0"])[0] if in_query else parts.path.strip("/") or "0"
    database = int(base) + 1 + int(worker.removeprefix("gw"))
    if database > 15:
        raise ImproperlyConfigured(
            f"pytest-xdist worker {worker} needs Redis database {database}; a default Redis has 0 to 15"
        )
    if in_query:  # (urlunsplit would drop the empty host of unix:///path)
        return url.partition("?")[0] + "?" + urlencode({**query, "db": [str(database)]}, doseq=True)
    return urlunsplit(parts._replace(path=f"/{database}"))


# Before the settings read it, so that the servers tests start inherit the worker's database too.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = _redis_url_for_xdist_worker(os.environ["REDIS_URL"], os.environ["PYTEST_XDIST_WORKER"])

from wonderq_project.settings import *  # noqa: E402, F403

# Factories hash a password for every user; the real hasher would dominate the suite's time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
