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
gc.collect()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
    "urlconf": "queues.api.urls" in sys.modules and "queues.admin" in sys.modules,
}))
"""


def test_wsgi__startup_objects_are_frozen_out_of_the_collectors_full_passes(tmp_path):
    """A full collection must walk what requests create, not Django's startup objects.

    Walking them stopped a worker for 37-47 ms, twice in every `bench` run (3.6-9 ms since).
    """
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "wsgi-test-key",
    }
    run = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    probe = json.loads(run.stdout)
    assert probe["urlconf"], "the URLconf (and every view it imports) must be loaded before the freeze"
    assert probe["frozen"] > 50_000, probe
    assert probe["tracked"] < probe["frozen"] / 20, probe
