"""Rate limits: 429 JSON with Retry-After, per token, per address for failed authentication, shared via Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.conftest import api_client_for, requires_redis
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent
URL = "/api/v1/queues/"


@pytest.mark.django_db
def test_rate_per_token__over_the_limit_answers_429_with_retry_after(settings, user):
    settings.WONDERQ_RATE_PER_TOKEN = "5/m"
    api, other = api_client_for(user), api_client_for(UserFactory())
    assert [api.get(URL).status_code for _ in range(5)] == [200] * 5
    response = api.get(URL)
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert other.get(URL).status_code == 200, "another token has its own budget"


@pytest.mark.django_db
def test_rate_failed_auth__an_address_that_keeps_failing_is_refused(settings, user):
    settings.WONDERQ_RATE_FAILED_AUTH = "3/m"
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token wq_not-a-real-key")
    assert [bad.get(URL).status_code for _ in range(3)] == [401] * 3
    response = bad.get(URL)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    # Even a valid key from that address waits: the address is what is limited.
    assert api_client_for(user).get(URL).status_code == 429


@pytest.mark.django_db
def test_rate_limits__can_be_switched_off(settings, user):
    settings.WONDERQ_RATE_PER_TOKEN = "1/m"
    settings.RATELIMIT_ENABLE = False
    api = api_client_for(user)
    assert [api.get(URL).status_code for _ in range(3)] == [200] * 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, key: str) -> tuple[int, str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {key}", "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert body["code"] == "throttled", body
        return exc.code, exc.headers.get("Retry-After")


@requires_redis
@pytest.mark.slow
def test_rate_per_token__burst_over_four_gunicorn_workers_shares_one_budget(tmp_path):
    limit = 100
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "ratelimit-test-key",
        "DJANGO_DEBUG": "0",
        # An hour-long window: a burst of a few seconds cannot straddle two windows by chance.
        "WONDERQ_RATE_PER_TOKEN": f"{limit}/h",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [*manage, "create_token", "burst"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wonderq_project.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "4", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/v1/queues/"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda _: _get(url, key), range(3 * limit)))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    admitted = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert len(admitted) + len(refused) == 3 * limit
    assert len(admitted) <= 1.05 * limit
    assert len(admitted) >= 0.95 * limit, "the shared counter must not refuse requests under the limit"
    assert all(retry_after and int(retry_after) >= 1 for _, retry_after in refused)
