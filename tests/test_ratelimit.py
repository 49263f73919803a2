"""Rate limits: 429 JSON with Retry-After, per token, per address for failed authentication, shared via Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.test import APIClient

from tests import live
from tests.conftest import api_client_for, requires_redis
from tests.factories import UserFactory

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
    with live.fresh_database(tmp_path) as database_url:
        # An hour-long window: a burst of a few seconds cannot straddle two windows by chance.
        env = live.project_env(database_url, WONDERQ_RATE_PER_TOKEN=f"{limit}/h")
        live.manage(env, "migrate", "-v0")
        key = live.manage(env, "create_token", "burst").strip()
        with live.gunicorn(env, workers=4) as base, ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda _: _get(f"{base}/queues/", key), range(3 * limit)))
    admitted = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert len(admitted) + len(refused) == 3 * limit
    assert len(admitted) <= 1.05 * limit
    assert len(admitted) >= 0.95 * limit, "the shared counter must not refuse requests under the limit"
    assert all(retry_after and int(retry_after) >= 1 for _, retry_after in refused)
