"""The WSGI module a gunicorn worker imports: what it leaves for the garbage collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import gc, json, sys
import wonderq_project.wsgi
from queues.api.throttling import _redis_script
_redis_script()  # what a worker's first rate-limited request asks
gc.collect()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
    "urlconf": "queues.api.urls" in sys.modules and "queues.admin" in sys.modules,
    "redis": sorted(name for name in ("redis", "django_redis") if name in sys.modules),
}))
"""


def _probe(tmp_path) -> dict:
    """What a worker holds once it has imported the WSGI module and looked for the rate counters' Redis, on
    SQLite without Redis (the default)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "wsgi-test-key",
    }
    env.pop("REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_wsgi__startup_objects_are_frozen_out_of_the_collectors_full_passes(tmp_path):
    """A full collection must walk what requests create, not Django's startup objects.

    Walking them stopped a worker for 37-47 ms, twice in every `bench` run (3.6-9 ms since).
    """
    probe = _probe(tmp_path)
    assert probe["urlconf"], "the URLconf (and every view it imports) must be loaded before the freeze"
    assert probe["frozen"] > 50_000, probe
    assert probe["tracked"] < probe["frozen"] / 20, probe


def test_wsgi__without_redis_a_worker_does_not_load_its_client(tmp_path):
    """redis-py and django-redis cost each worker about 8 MiB: SQLite's default has no Redis to talk to."""
    assert _probe(tmp_path)["redis"] == []


def test_wsgi__with_redis_the_rate_counters_use_its_script_from_the_first_request(tmp_path):
    """The Redis client is looked for among the loaded modules: it must be found in a fresh worker."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "wsgi-test-key",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never called: registering a script sends nothing
    }
    probe = (
        "import wonderq_project.wsgi\n"
        "from queues.api.throttling import _redis_script\n"
        "print(_redis_script() is not None)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "True"
