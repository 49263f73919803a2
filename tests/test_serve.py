"""End to end: `manage.py serve` on a fresh database runs the API and the scheduler with no manual step."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests import live

pytestmark = pytest.mark.slow


def _call(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served(tmp_path):
    """A `serve` process on a fresh database, as a new user would start it."""
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, DJANGO_DEBUG="1")
        env.pop("REDIS_URL", None)
        port = live.free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        args = [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        with live.process(args, env, f"{base}/health/") as server:
            yield server, base, live.manage(env, "create_token", "e2e").strip()


def test_serve__expired_lease_lands_in_review_with_no_manual_step(served):
    process, base, token = served
    assert _call(f"{base}/queues/", token, {"name": "e2e", "visibility_timeout": 1})[0] == 201
    assert _call(f"{base}/queues/e2e/messages/", token, {"body": "slow job"})[0] == 201
    status, received = _call(f"{base}/queues/e2e/receive/", token, {"consumer": "slow-worker"})
    assert status == 200 and len(received["messages"]) == 1
    leased_at = time.monotonic()

    # The review list shows only what the sweep has materialised: wait for the scheduler to run it.
    # django-q2 checks schedules every 30 s and the sweep is due every minute: 95 s bounds both.
    items = []
    while time.monotonic() - leased_at < 95:
        status, page = _call(f"{base}/queues/e2e/review/", token)
        assert status == 200
        items = page["results"]
        if items:
            break
        time.sleep(1)
    assert items, "the scheduled sweep did not move the expired lease to review"
    assert items[0]["consumer"] == "slow-worker"
    assert items[0]["reason"] == "timeout"
    assert [d["outcome"] for d in items[0]["deliveries"]] == ["expired"]

    # Ctrl-C stops the web server and the scheduler together, cleanly.
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=40) == 0
