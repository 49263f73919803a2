"""schemathesis against the project's own OpenAPI schema, with a valid token, on a real gunicorn.

Bounded to WONDERQ_FUZZ_SECONDS (default 150 s). A longer run, e.g. an hour:
    WONDERQ_FUZZ_SECONDS=3600 .venv/bin/pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests import live

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def _st() -> str | None:
    found = Path(sys.executable).with_name("st")
    return str(found) if found.exists() else shutil.which("st")


@pytest.mark.skipif(_st() is None, reason="schemathesis is not installed (pip install -r requirements/dev.txt)")
def test_fuzz__no_server_error_and_no_schema_violation(tmp_path):
    seconds = int(os.environ.get("WONDERQ_FUZZ_SECONDS", "150"))
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(
            database_url,
            WONDERQ_RATE_PER_TOKEN="1000000/m",
            WONDERQ_RATE_FAILED_AUTH="1000000/m",
            DJANGO_LOG_LEVEL="ERROR",
        )
        live.manage(env, "migrate", "-v0")
        key = live.manage(env, "create_token", "fuzzer").strip()
        with live.gunicorn(env, workers=2) as base:
            # A queue that exists, so operations on /queues/{name}/ reach past the 404.
            request = urllib.request.Request(
                f"{base}/queues/",
                data=json.dumps({"name": "fuzz", "visibility_timeout": 1}).encode(),
                headers={"Authorization": f"Token {key}", "Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()
            config = tmp_path / "schemathesis.toml"
            config.write_text('[parameters]\n"path.name" = "fuzz"\n')
            run = subprocess.run(
                [_st(), "--no-color", "--config-file", str(config), "run", f"{base}/schema/", "--url", base.removesuffix("/api/v1"),
                 "--checks", CHECKS, "--header", f"Authorization: Token {key}", "--max-time", str(seconds),
                 "--workers", "2", "--request-timeout", "30", "--suppress-health-check", "all",
                 # Deleting the queue would leave nothing to fuzz; test_api covers DELETE.
                 "--exclude-method", "DELETE"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=seconds + 300,
            )  # fmt: skip
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
