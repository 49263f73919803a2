"""WonderQ settings, read from the environment.

Every variable is listed in the README. The defaults run the whole service on one
machine with nothing to install: SQLite beside manage.py and a local-memory cache.
"""

import os
import re
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no variable; anything but 1/true/yes/on is false."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated variable into a list, dropping empty items."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off. "
            "For local use set DJANGO_DEBUG=1, or export a long random DJANGO_SECRET_KEY."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG"  # noqa: S105

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "queues",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the docs page's static files from the app itself: no CDN, no nginx needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A body without Content-Length (chunked) would read as empty: 411 before anything reads it.
    "queues.api.errors.LengthRequiredMiddleware",
    # Plain send/receive/ack calls are answered here; everything else goes on (queues/api/hotpath.py).
    "queues.api.hotpath.HotPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "wonderq_project.urls"
WSGI_APPLICATION = "wonderq_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# DATABASE_URL picks the engine; the default is a SQLite file beside manage.py.
# PostgreSQL: the hot statements bind parameters on the server, and those with one right
# plan whatever their values are prepared after a few runs on a connection (plans reused;
# see queues.services._sql). Off behind a pooler that cannot keep
# prepared statements (PgBouncer before 1.21 in transaction mode).
WONDERQ_PREPARED_STATEMENTS = env_bool("WONDERQ_PREPARED_STATEMENTS", True)
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL)
_SQLITE_SYNCHRONOUS = os.environ.get("WONDERQ_SQLITE_SYNCHRONOUS", "NORMAL").upper()
if _SQLITE_SYNCHRONOUS not in {"NORMAL", "FULL", "EXTRA"}:
    raise ImproperlyConfigured("WONDERQ_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA.")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, with writers queued on a file lock (see its docstring).
    _db["ENGINE"] = "wonderq_project.sqlite3"
    _db["OPTIONS"] = {
        # Writers take the lock at BEGIN, so a read-then-write never upgrades a
        # shared lock (the source of "database is locked" under load).
        "transaction_mode": "IMMEDIATE",
        # Seconds a writer waits for the lock before giving up.
        "timeout": float(os.environ.get("WONDERQ_SQLITE_BUSY_TIMEOUT", "20")),
        # WAL with synchronous=NORMAL survives a crash of the process; FULL also a power cut.
        "init_command": f"PRAGMA journal_mode=WAL;PRAGMA synchronous={_SQLITE_SYNCHRONOUS};PRAGMA foreign_keys=ON;",
    }
    # Connections stay open: opening one costs little, but closing the last one
    # checkpoints the WAL, a disk flush on every request.
    _db["CONN_MAX_AGE"] = None
    # Tests use a file too (an in-memory database proves nothing about concurrency), one per
    # test process so that two runs side by side never share it.
    _db["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"wonderq-test-{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, with a pool check only for connections that sat unused (see its docstring).
    _db["ENGINE"] = "wonderq_project.postgresql"
    _db["OPTIONS"] = {
        # Django's own cursors bind in the client and are never prepared; this applies to ours.
        "prepare_threshold": 5 if WONDERQ_PREPARED_STATEMENTS else None,
        "pool": {
            "min_size": int(os.environ.get("WONDERQ_DB_POOL_MIN", "1")),
            "max_size": int(os.environ.get("WONDERQ_DB_POOL_MAX", "10")),
            # Seconds a request waits for a free connection before it answers 503 (queues.api.errors).
            "timeout": float(os.environ.get("WONDERQ_DB_POOL_TIMEOUT", "10")),
        },
    }
    _db["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django must not.
    # The pool checks a connection before lending it only if it was last lent this many seconds
    # ago or more; 0 checks every time (a round trip on every request).
    _db["CONN_HEALTH_CHECKS"] = True
    try:
        _db["CHECK_AFTER_IDLE"] = float(os.environ.get("WONDERQ_DB_CHECK_AFTER_IDLE", "1"))
    except ValueError:
        raise ImproperlyConfigured(
            "WONDERQ_DB_CHECK_AFTER_IDLE must be a number of seconds, e.g. 1 (0 checks always)."
        ) from None
    if not 0 <= _db["CHECK_AFTER_IDLE"] < float("inf"):
        raise ImproperlyConfigured("WONDERQ_DB_CHECK_AFTER_IDLE must be 0 or more seconds.")
else:
    raise ImproperlyConfigured(f"DATABASE_URL must be sqlite:// or postgres://, got {_db['ENGINE']}")
DATABASES = {"default": _db}

# --- Web server (`serve`, `bench`) ------------------------------------------------
# The gunicorn worker class, chosen by measurement for each database (README, Performance).
# PostgreSQL: gevent, one greenlet per request, which yields while it waits for the
# database, Redis or a long poll's sleep. SQLite: gthread, since a writer waits for the
# database's lock file in a blocking call that would stop every greenlet of its process.
WONDERQ_WORKER_CLASS = os.environ.get("WONDERQ_WORKER_CLASS") or (
    "gevent" if _db["ENGINE"] == "wonderq_project.postgresql" else "gthread"
)
if WONDERQ_WORKER_CLASS not in {"gthread", "gevent"}:
    raise ImproperlyConfigured(f"WONDERQ_WORKER_CLASS must be gthread or gevent, got {WONDERQ_WORKER_CLASS!r}.")
if WONDERQ_WORKER_CLASS == "gevent" and _db["ENGINE"] == "wonderq_project.sqlite3":
    raise ImproperlyConfigured(
        "WONDERQ_WORKER_CLASS=gevent needs PostgreSQL: on SQLite a writer waiting for the lock would stop "
        "every request of its worker. Use gthread."
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate-limit counters, authentication cache) ---------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "wonderq",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # Seconds: an unreachable Redis fails a request's cache call (see queues/services/_cache.py)
                # instead of holding it for the operating system's TCP timeout of minutes.
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # django-ratelimit refuses a cache that processes do not share. Without REDIS_URL each
    # process (each of serve's gunicorn workers) counts alone: documented in the README's
    # configuration table, which says to set REDIS_URL wherever limits must hold exactly.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

CACHES["scheduler"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "scheduler"}

RATELIMIT_ENABLE = env_bool("WONDERQ_RATELIMIT_ENABLE", True)
# django-ratelimit's own setting: with Redis unreachable, admit requests uncounted (True) or answer 503.
RATELIMIT_FAIL_OPEN = env_bool("WONDERQ_RATELIMIT_FAIL_OPEN", False)

# --- Auth ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Without collectstatic (the embedded default) WhiteNoise finds files the way runserver does.
WHITENOISE_USE_FINDERS = True

# --- Security (production defaults; see `manage.py check --deploy`) --------------
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Messages stay server-side: the admin shows a new token's key once, and it must not travel in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# Behind TLS in production set these (README, "Production"); off by default so plain-HTTP local runs work.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/$"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    # Trust X-Forwarded-Proto only when a proxy you run sets it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Django refuses larger form bodies; the API's JSON parser has its own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("WONDERQ_MAX_REQUEST_BYTES", str(2 * 1024 * 1024)))

# --- REST framework ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "queues.api.authentication.ApiTokenAuthentication",
        # Staff signed in to the admin can use the docs page; CSRF applies.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["queues.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "queues.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": ["queues.api.throttling.TokenRateThrottle"],
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "WonderQ API",
    "DESCRIPTION": "A durable message queue with leases and a human-reviewed timeout queue.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs page's assets are served by the app itself: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "queues.api.schema.add_error_responses",
    ],
}

# --- django-q2: the ORM broker keeps the scheduler on the same database ----------
Q_CLUSTER = {
    "name": "wonderq",
    "orm": "default",
    # The cluster's own statistics (what `qmonitor` shows) stay in its process: in Redis they were
    # written every 0.5 s, and with Redis down each write logged an error and a hung one held the
    # scheduler for its timeout. Nothing of WonderQ reads them.
    "cache": "scheduler",
    "workers": int(os.environ.get("WONDERQ_Q_WORKERS", "1")),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 200,
    "poll": 0.5,
    "label": "Scheduler",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django_q": {"level": "WARNING"}},
}

# --- WonderQ (read through queues.conf.app_settings; defaults live there) --------
for _name in (
    "WONDERQ_MAX_MESSAGE_BYTES",
    "WONDERQ_MAX_BATCH",
    "WONDERQ_DEFAULT_VISIBILITY_TIMEOUT",
    "WONDERQ_MAX_VISIBILITY_TIMEOUT",
    "WONDERQ_MAX_WAIT_SECONDS",
    "WONDERQ_MAX_DELAY_SECONDS",
    "WONDERQ_DEFAULT_MAX_RECEIVES",
    "WONDERQ_ACKED_RETENTION_SECONDS",
    "WONDERQ_DEDUP_WINDOW_SECONDS",
    "WONDERQ_SWEEP_BATCH",
    "WONDERQ_MAX_JSON_DEPTH",
    "WONDERQ_AUTH_CACHE_SECONDS",
    "WONDERQ_SNAPSHOT_RETENTION_DAYS",
    "WONDERQ_DECISION_RETENTION_DAYS",
):
    if _name in os.environ:
        try:
            globals()[_name] = int(os.environ[_name])
        except ValueError:
            raise ImproperlyConfigured(f"{_name} must be a whole number, got {os.environ[_name]!r}.") from None
        # A negative retention would put the cutoff in the future: prune would delete everything.
        # A sweep batch of 0 would claim nothing, ever (the sweep would spin); its top is `sweep`'s.
        _low, _high = (1, 100_000) if _name == "WONDERQ_SWEEP_BATCH" else (1 if _name.endswith("_DAYS") else 0, None)
        if globals()[_name] < _low:
            raise ImproperlyConfigured(f"{_name} must be {_low} or more, got {os.environ[_name]!r}.")
        if _high is not None and globals()[_name] > _high:
            raise ImproperlyConfigured(f"{_name} must be at most {_high}, got {os.environ[_name]!r}.")
if "WONDERQ_QUEUE_CACHE_SECONDS" in os.environ:
    try:
        WONDERQ_QUEUE_CACHE_SECONDS = float(os.environ["WONDERQ_QUEUE_CACHE_SECONDS"])
    except ValueError:
        WONDERQ_QUEUE_CACHE_SECONDS = -1.0
    if not 0 <= WONDERQ_QUEUE_CACHE_SECONDS < float("inf"):
        raise ImproperlyConfigured("WONDERQ_QUEUE_CACHE_SECONDS must be 0 or more seconds, e.g. 1 (0: no cache).")
if os.environ.get("WONDERQ_CLIENT_ADDRESS_HEADER"):
    # A header name as sent (X-Forwarded-For, X-Real-IP), as Django's META key (HTTP_X_FORWARDED_FOR).
    _header = os.environ["WONDERQ_CLIENT_ADDRESS_HEADER"].strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", _header):
        raise ImproperlyConfigured(
            f"WONDERQ_CLIENT_ADDRESS_HEADER must be a header name such as X-Forwarded-For, got {_header!r}."
        )
    WONDERQ_CLIENT_ADDRESS_HEADER = "HTTP_" + _header.upper().replace("-", "_")
for _name in ("WONDERQ_RATE_PER_TOKEN", "WONDERQ_RATE_ANONYMOUS", "WONDERQ_RATE_FAILED_AUTH"):
    if _name in os.environ:
        globals()[_name] = os.environ[_name]
WONDERQ_MAX_REQUEST_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE
