"""schemathesis against the project's own OpenAPI schema, with a valid token, on a real gunicorn.

Every answer must be no server error and must match the schema (status code, content type, body).
Bounded to WONDERQ_FUZZ_SECONDS of fuzzing (default 150 s). A longer run, e.g. half an hour:
    WONDERQ_FUZZ_SECONDS=1800 .venv/bin/pytest tests/test_fuzz.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from tests import live

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
QUEUE = "fuzz"
# DELETE /queues/{name}/ gets a queue of its own: deleting the target would leave every later case a 404.
DOOMED = "fuzz-doomed"
_CLIENT_ERROR_LINE = re.compile(r"[A-Z][A-Za-z ]+: /api/")

GRANTEE = "fuzz-grantee"
# The `st` command, with one fix: CPython 3.11's ast module is not thread-safe (python/cpython#106905),
# and when two schemathesis workers make hypothesis parse source at once, one fails with
# "SystemError: AST constructor recursion depth mismatch". A lock around ast.parse serialises them.
_ST = """
import ast, sys, threading
from schemathesis.cli import schemathesis
parse, lock = ast.parse, threading.Lock()
def locked_parse(*args, **kwargs):
    with lock:
        return parse(*args, **kwargs)
ast.parse = locked_parse
sys.exit(schemathesis())
"""

# Path parameters fixed to a queue and a grantee that exist, so the fuzzer reaches the code behind the 404.
CONFIG = f"""\
[parameters]
"path.name" = "{QUEUE}"
"path.username" = "{GRANTEE}"

[[operations]]
include-method = "DELETE"
include-path-regex = "^/api/v1/queues/\\\\{{name\\\\}}/$"
parameters = {{ "path.name" = "{DOOMED}" }}
"""


def _call(base: str, key: str, path: str, body: dict | None = None, method: str | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Token {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _seed(base: str, key: str, env: dict) -> None:
    """The target queue with ready, leased and review messages (rejected and timed out) and a grant; one to delete."""
    for name in (QUEUE, DOOMED):
        _call(base, key, "/queues/", {"name": name})
    live.manage(env, "create_token", GRANTEE)
    if "/api/v1/queues/{name}/grants/{username}/" in _call(base, key, "/schema/?format=json")["paths"]:
        _call(base, key, f"/queues/{QUEUE}/grants/{GRANTEE}/", {"send": True, "receive": True}, method="PUT")
    url = f"/queues/{QUEUE}"
    messages = [{"body": f"message {i}", "attributes": {"n": i, "kind": "seed"}} for i in range(30)]
    _call(base, key, f"{url}/messages/", {"messages": messages})
    rejected = _call(base, key, f"{url}/receive/", {"max_messages": 5, "consumer": "seed-rejecter"})["messages"]
    _call(base, key, f"{url}/reject/", {"receipts": [m["receipt"] for m in rejected], "reason": "seeded"})
    # Leases of 0 s expire at once; the sweep moves them to review as timed out.
    _call(base, key, f"{url}/receive/", {"max_messages": 5, "visibility_timeout": 0, "consumer": "seed-slow"})
    live.manage(env, "sweep")
    _call(base, key, f"{url}/receive/", {"max_messages": 5, "visibility_timeout": 3600, "consumer": "seed-holder"})


@pytest.mark.skipif(
    importlib.util.find_spec("schemathesis") is None,
    reason="schemathesis is not installed (pip install -r requirements/dev.txt)",
)
def test_fuzz__no_server_error_and_no_schema_violation(tmp_path):
    seconds = int(os.environ.get("WONDERQ_FUZZ_SECONDS", "150"))
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(
            database_url,
            # 429s would hide what is behind them.
            WONDERQ_RATE_PER_TOKEN="10000000/m",
            WONDERQ_RATE_ANONYMOUS="10000000/m",
            WONDERQ_RATE_FAILED_AUTH="10000000/m",
            # A long poll holds a sync worker for up to wait_seconds: keep the fuzzer's cases short.
            WONDERQ_MAX_WAIT_SECONDS="1",
            DJANGO_LOG_LEVEL="ERROR",
        )
        live.manage(env, "migrate", "-v0")
        key = live.manage(env, "create_token", "fuzzer").strip()
        port = live.free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        server_log = tmp_path / "gunicorn.log"
        args = [sys.executable, "-m", "gunicorn", "wonderq_project.wsgi:application", "--bind", f"127.0.0.1:{port}",
                "--workers", "2", "--log-level", "warning"]  # fmt: skip
        # The server's log (tracebacks of any 500) goes to a file, shown only if the run fails.
        with server_log.open("w") as log, live.process(args, env, f"{base}/health/", stdout=log, stderr=log):
            _seed(base, key, env)
            config = tmp_path / "schemathesis.toml"
            config.write_text(CONFIG)
            run = subprocess.run(
                [sys.executable, "-c", _ST, "--no-color", "--config-file", str(config),
                 "run", f"{base}/schema/", "--url", base.removesuffix("/api/v1"),
                 "--checks", CHECKS, "--header", f"Authorization: Token {key}",
                 "--max-time", str(seconds), "--workers", "2", "--request-timeout", "30",
                 "--suppress-health-check", "all", "--generation-database", "none"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=seconds + 300,
            )  # fmt: skip
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:] + _errors(server_log)


def _errors(log_path) -> str:
    """The server's log without Django's one-line 4xx warnings ("Not Found: /path"), which are what a fuzzer earns."""
    lines = [line for line in log_path.read_text().splitlines() if not _CLIENT_ERROR_LINE.match(line)]
    return "\n--- server log ---\n" + "\n".join(lines[-200:])
