"""Rate limits: 429 JSON with Retry-After, per token, per address for failed authentication, shared via Redis."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from queues.services import token_create, token_revoke
from tests import live
from tests.conftest import api_client_for, requires_redis
from tests.factories import UserFactory

URL = "/api/v1/queues/"

# The tests below count requests against windows as short as a minute: none may turn mid-test.
pytestmark = pytest.mark.usefixtures("rate_windows_held")


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


def _call(url: str, key: str, body: bytes | None = None) -> tuple[int, str | None]:
    headers = {"Authorization": f"Token {key}", "Connection": "close", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert body["code"] == "throttled", body
        return exc.code, exc.headers.get("Retry-After")


@requires_redis
@pytest.mark.slow
# A list goes through DRF's throttle; a send, once a worker knows the token, through the hot path's count.
# 100 is counted request by request; 2,000 in slices of 20, of which each worker may leave one unspent.
@pytest.mark.parametrize(("call", "limit", "requests"), [("list", 100, 300), ("send", 100, 300), ("send", 2000, 2400)])
def test_rate_per_token__burst_over_four_gunicorn_workers_shares_one_budget(tmp_path, call, limit, requests):
    with live.fresh_database(tmp_path) as database_url:
        # A 30-day window: an hour's, aligned to the clock, turns during a burst of a few seconds in
        # about one run of 450, and the next window admits `limit` more (the server's clock is its own).
        env = live.project_env(database_url, WONDERQ_RATE_PER_TOKEN=f"{limit}/30d")
        live.manage(env, "migrate", "-v0")
        key = live.manage(env, "create_token", "burst").strip()
        live.manage(env, "create_queue", "burst", "--owner", "burst")
        with live.gunicorn(env, workers=4) as base, ThreadPoolExecutor(max_workers=16) as pool:
            if call == "list":
                answers = list(pool.map(lambda _: _call(f"{base}/queues/", key), range(requests)))
            else:
                url, body = f"{base}/queues/burst/messages/", b'{"body": "x"}'
                answers = list(pool.map(lambda _: _call(url, key, body), range(requests)))
    admitted = [a for a in answers if a[0] in (200, 201)]
    refused = [a for a in answers if a[0] == 429]
    assert len(admitted) + len(refused) == requests
    assert len(admitted) <= limit, "the shared count never admits more than the limit"
    assert len(admitted) >= 0.95 * limit, "the shared counter must not refuse requests under the limit"
    assert all(retry_after and int(retry_after) >= 1 for _, retry_after in refused)


@pytest.fixture
def redis_commands(monkeypatch):
    """The Redis commands this process sends (the real client still sends them)."""
    import redis

    commands = []
    execute = redis.Redis.execute_command

    def counting(self, *args, **options):
        commands.append(args[0])
        return execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    return commands


@requires_redis
@pytest.mark.django_db
def test_rate_counter__one_redis_round_trip_per_request(settings, redis_commands, user, queue):
    """django-ratelimit's get_usage makes two (add, then incr); ours counts in one script call."""
    settings.WONDERQ_RATE_PER_TOKEN = "150/m"  # under 200: counted request by request
    commands = redis_commands
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    api.post(f"{base}/receive/", {}, format="json")  # the first request also looks the token up
    commands.clear()
    for path, body in [("messages", {"body": "x"}), ("receive", {}), ("ack", {"receipts": ["1.00"]})]:
        assert api.post(f"{base}/{path}/", body, format="json").status_code in (200, 201)
    assert api.get(URL).status_code == 200
    assert commands == ["EVALSHA"] * 4


@requires_redis
@pytest.mark.django_db
def test_rate_counter__keys_and_counts_are_django_ratelimits():
    """The script writes the key django-ratelimit reads, with an expiry: the two agree on every count."""
    from django.test import RequestFactory
    from django_ratelimit.core import get_usage

    from queues.api.throttling import usage

    request = RequestFactory().get("/")
    for expected in (1, 2, 3):
        ours = usage(request, group="g", ident="token:7", rate="10/m", increment=True)
        theirs = get_usage(request, group="g", key=lambda _g, _r: "token:7", rate="10/m", increment=False)
        assert ours["count"] == theirs["count"] == expected
        assert ours["time_left"] == theirs["time_left"] and ours["limit"] == theirs["limit"] == 10
    theirs = get_usage(request, group="g", key=lambda _g, _r: "token:7", rate="10/m", increment=True)
    assert usage(request, group="g", ident="token:7", rate="10/m", increment=False)["count"] == theirs["count"] == 4
    from django_redis import get_redis_connection

    ttls = [get_redis_connection("default").ttl(key) for key in get_redis_connection("default").keys("*rl:*")]
    assert len(ttls) == 1 and 0 < ttls[0] <= 60 + 5


@requires_redis
@pytest.mark.django_db
def test_rate_counter__a_large_budget_is_taken_in_slices(settings, redis_commands, user, queue):
    settings.WONDERQ_RATE_PER_TOKEN = "1000/m"  # slices of 10
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    assert api.post(f"{base}/receive/", {}, format="json").status_code == 200  # takes the first slice
    redis_commands.clear()
    answers = [api.post(f"{base}/receive/", {}, format="json").status_code for _ in range(35)]
    assert answers == [200] * 35
    assert redis_commands == ["EVALSHA"] * 3, "9 left in the first slice, then 3 more slices for 26 requests"
    settings.WONDERQ_RATE_PER_TOKEN = "200/m"  # a new budget (slices of 2): spent, then refused locally
    answers = [api.post(f"{base}/receive/", {}, format="json").status_code for _ in range(205)]
    assert answers == [200] * 200 + [429] * 5
    redis_commands.clear()
    assert api.post(f"{base}/receive/", {}, format="json").status_code == 429
    assert redis_commands == [], "once the window's budget is spent, a refusal costs no round trip"


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [150, 300])  # counted one by one, and in slices of 3 (Redis or local memory)
def test_rate_counter__admits_exactly_the_limit_in_one_process(settings, user, queue, limit):
    settings.WONDERQ_RATE_PER_TOKEN = f"{limit}/h"
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    answers = []
    for i in range(limit + 20):
        if i % 2:
            answers.append(api.post(f"{base}/receive/", {}, format="json").status_code)
        else:
            answers.append(api.get(URL).status_code)
    assert answers == [200] * limit + [429] * 20


def test_xdist_workers__each_counts_in_a_redis_database_of_its_own():
    # Under `pytest -n N` the workers' test databases hand out the same token ids, so a shared Redis
    # would put two workers' tests on one rate counter (test_settings moves each worker's REDIS_URL).
    from wonderq_project.test_settings import _redis_url_for_xdist_worker as url_for

    assert url_for("redis://127.0.0.1:6379/0", "gw0") == "redis://127.0.0.1:6379/1"
    assert url_for("redis://127.0.0.1:6379", "gw1") == "redis://127.0.0.1:6379/2"
    assert url_for("rediss://:secret@cache.internal:6380/4", "gw2") == "rediss://:secret@cache.internal:6380/7"
    # redis-py takes a `db` query value over the path; a unix socket has only the query.
    assert url_for("redis://127.0.0.1:6379/0?db=3", "gw0") == "redis://127.0.0.1:6379/0?db=4"
    assert url_for("unix:///run/redis.sock", "gw1") == "unix:///run/redis.sock?db=2"
    assert url_for("unix:///run/redis.sock?db=5&password=x", "gw0") == "unix:///run/redis.sock?db=6&password=x"
    with pytest.raises(ImproperlyConfigured, match="worker gw15 needs Redis database 16"):
        url_for("redis://127.0.0.1:6379/0", "gw15")


def test_rate_anonymous__health_is_never_limited(db, client, settings):
    """Load balancers poll it, many behind one address: a 429 there would read as "unhealthy"."""
    # An hour's window: a minute's, aligned to the clock, could turn between the requests below.
    settings.WONDERQ_RATE_ANONYMOUS = "3/h"

    assert [client.get("/api/v1/health/").status_code for _ in range(6)] == [200] * 6
    assert [client.get("/api/v1/schema/").status_code for _ in range(4)][-1] == 429


def _fail_auth_from(remote: str, forwarded: str | None = None) -> int:
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token wq_not-a-real-key")
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return bad.get(URL, **extra).status_code


@pytest.mark.django_db
def test_rate_failed_auth__behind_a_proxy_each_client_counts_by_the_address_the_proxy_saw(settings, user):
    """Every client arrives from the proxy's address: without the header setting one client's
    failures lock out every uncached key behind that proxy."""
    settings.WONDERQ_RATE_FAILED_AUTH = "3/m"
    settings.WONDERQ_CLIENT_ADDRESS_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = "10.0.0.2"
    # What a client wrote in the header itself comes first; the proxy appends the address it saw.
    assert [_fail_auth_from(proxy, f"6.6.6.{i}, 203.0.113.7") for i in range(3)] == [401] * 3
    assert _fail_auth_from(proxy, "203.0.113.7") == 429
    good = api_client_for(user)
    assert good.get(URL, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200
    # IPv6 clients count by their /64.
    assert [_fail_auth_from(proxy, f"2001:db8:0:1::{i}") for i in range(4)] == [401, 401, 401, 429]
    # A header missing or not an address: the connection's address counts, never a 500.
    assert [_fail_auth_from(proxy, value) for value in (None, "unknown", "")] == [401, 401, 401]
    assert _fail_auth_from(proxy, "not an address") == 429


@pytest.mark.django_db
def test_rate_failed_auth__without_the_setting_a_client_cannot_pick_its_address(settings):
    settings.WONDERQ_RATE_FAILED_AUTH = "3/m"
    assert [_fail_auth_from("198.51.100.9", f"192.0.2.{i}") for i in range(4)] == [401, 401, 401, 429]


def _redis_cache_at(settings, port: int) -> None:
    """The shared cache is a Redis at 127.0.0.1:`port`, with the project's timeouts (settings.py)."""
    options = {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}
    location = f"redis://127.0.0.1:{port}/0"
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location, "OPTIONS": options}
    }


@pytest.fixture
def redis_unreachable(settings):
    """The shared cache is a Redis no one listens for (stopped, or the network to it down)."""
    _redis_cache_at(settings, live.free_port())


@pytest.fixture
def redis_hung(settings):
    """A Redis that takes connections and never answers (stopped with SIGSTOP, a half-dead host)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # the kernel completes connections into the backlog; nothing ever reads them
        _redis_cache_at(settings, listener.getsockname()[1])
        yield


@pytest.mark.django_db
def test_redis_unreachable__limits_fail_closed_with_503_and_nothing_done(redis_unreachable, client, user, queue):
    """Every request was a 500 traceback (redis ConnectionError), while /health/ said ok."""
    api = api_client_for(user)
    for path, body in [("messages", {"body": "x"}), ("receive", {}), ("ack", {"receipts": ["1.00"]})]:
        response = api.post(f"/api/v1/queues/{queue.name}/{path}/", body, format="json")
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "unavailable" and "Redis" in response.json()["detail"]
        assert response["Retry-After"] == "1"
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token wq_not-a-real-key")
    assert bad.get(URL).status_code == 503  # its failed authentications cannot be counted either
    assert queue.messages.count() == 0
    assert client.get("/api/v1/health/").status_code == 200  # the database answers


@pytest.mark.django_db
def test_redis_unreachable__fail_open_admits_uncounted_and_tokens_come_from_the_database(
    redis_unreachable, settings, user, queue
):
    settings.RATELIMIT_FAIL_OPEN = True
    settings.WONDERQ_RATE_PER_TOKEN = settings.WONDERQ_RATE_FAILED_AUTH = "2/m"
    token, key = token_create(user=user, name="outage")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    base = f"/api/v1/queues/{queue.name}"
    assert api.post(f"{base}/messages/", {"body": "x"}, format="json").status_code == 201
    [message] = api.post(f"{base}/receive/", {}, format="json").json()["messages"]
    [result] = api.post(f"{base}/ack/", {"receipts": [message["receipt"]]}, format="json").json()["results"]
    assert result["status"] == "acked"  # three requests over a limit of 2: nothing could count them
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token wq_not-a-real-key")
    assert [bad.get(URL).status_code for _ in range(4)] == [401] * 4

    # Revoking while Redis is down works (its delete failed with a 500), and the token stops here at once.
    assert token_revoke(token=token)
    assert api.post(f"{base}/messages/", {"body": "y"}, format="json").status_code == 401

    # Failing closed again: a token this process knows (the hot path's) answers 503 too, not 500.
    settings.RATELIMIT_FAIL_OPEN = False
    known = api_client_for(user)
    settings.RATELIMIT_FAIL_OPEN = True
    assert known.post(f"{base}/receive/", {}, format="json").status_code == 200  # now known to this process
    settings.RATELIMIT_FAIL_OPEN = False
    response = known.post(f"{base}/receive/", {}, format="json")
    assert response.status_code == 503 and response.json()["code"] == "unavailable"


@pytest.mark.django_db
@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_hung__costs_one_timeout_then_requests_go_on_at_once(redis_hung, settings, user, queue, fail_open):
    """Each request waited for the 1 s socket timeout, queued behind the rate counter's lock: one a
    second per worker. Revoking a page of tokens in the admin waited 1 s per token."""
    settings.RATELIMIT_FAIL_OPEN = fail_open
    api = api_client_for(user)
    started = time.monotonic()
    codes = [api.post(f"/api/v1/queues/{queue.name}/messages/", {"body": "x"}, format="json").status_code]
    first = time.monotonic() - started
    codes += [api.post(f"/api/v1/queues/{queue.name}/messages/", {"body": "x"}, format="json").status_code]
    codes += [api.get(URL).status_code for _ in range(6)]
    after_first = time.monotonic() - started - first
    tokens = [token_create(user=user, name=f"t{i}")[0] for i in range(6)]
    started = time.monotonic()
    assert all(token_revoke(token=token) for token in tokens)
    revoking = time.monotonic() - started

    assert codes == ([201, 201] + [200] * 6 if fail_open else [503] * 8)
    assert 0.9 <= first < 3, first  # the one call that waited for the timeout
    assert after_first < 3, after_first  # seven requests, none waiting (they waited 7 s)
    assert revoking < 3, revoking  # six revocations (they waited 6 s)
