"""Token authentication: hashed keys, cached lookups, revocation and expiry."""

from __future__ import annotations

import datetime as dt
import time
import types

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from queues.models import ApiToken
from queues.services import token_authenticate, token_cache_clear, token_create, token_known, token_revoke, tokens
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/queues/"


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_token__only_the_digest_is_stored(user):
    token, key = token_create(user=user, name="ci")
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert key not in {str(value) for value in row.values()}
    assert row["digest"] == ApiToken.digest_of(key)


def test_token__no_stored_value_authenticates(user):
    token, key = token_create(user=user, name="ci")
    assert client_with(key).get(URL).status_code == 200
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    for value in row.values():
        if value is None:
            continue
        response = client_with(str(value)).get(URL)
        assert response.status_code == 401, (value, response.content)


def test_token__cached_lookup_costs_no_query(user, django_assert_num_queries):
    _, key = token_create(user=user, name="ci")
    assert token_authenticate(key=key) is not None
    with django_assert_num_queries(0):
        assert token_authenticate(key=key).user == user


def test_token__revoked_through_the_service_stops_at_once(user):
    token, key = token_create(user=user, name="ci")
    client = client_with(key)
    assert client.get(URL).status_code == 200
    assert token_revoke(token=token) is True
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


@pytest.fixture
def auth_clock(monkeypatch) -> list[float]:
    """The clock the token caches read, moved on by the test instead of by sleeping.

    A test sleeping into the renewal window (the last fifth of a 1 s lifetime) had 0.15 s to
    spare, which a CI machine busy with the other xdist worker's gunicorn or browser can take.
    """
    clock = [time.time()]
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(time=lambda: clock[0]))
    return clock


def test_token__revoked_elsewhere_stops_within_the_cache_lifetime(user, settings, auth_clock):
    settings.WONDERQ_AUTH_CACHE_SECONDS = 1
    token, key = token_create(user=user, name="ci")
    client = client_with(key)
    assert client.get(URL).status_code == 200
    # Another process revoked it: this process's cache does not know yet.
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert client.get(URL).status_code == 200
    auth_clock[0] += 1.1
    assert client.get(URL).status_code == 401


def test_token__renewed_by_one_request_before_it_runs_out(user, settings, django_assert_num_queries, auth_clock):
    """In the last fifth of its lifetime the first request renews the entry; the others keep using it."""
    settings.WONDERQ_AUTH_CACHE_SECONDS = 1
    _, key = token_create(user=user, name="ci")
    assert token_authenticate(key=key) is not None
    auth_clock[0] += 0.85
    during = []

    def another_request(execute, sql, params, many, context):
        # What a request this process serves while the renewal waits on the database gets.
        during.append(token_known(key=key))
        return execute(sql, params, many, context)

    with django_assert_num_queries(1), connection.execute_wrapper(another_request):
        assert token_known(key=key).user == user
    assert [token.user for token in during] == [user]  # served from the entry, no second renewal
    auth_clock[0] += 0.3  # past the first lookup's deadline
    with django_assert_num_queries(0):
        assert token_known(key=key).user == user
        token_cache_clear()  # another process: it finds the renewed entry in the shared cache
        assert token_authenticate(key=key).user == user
        assert token_known(key=key).user == user


def test_token__renewal_sees_a_revocation(user, settings, auth_clock):
    settings.WONDERQ_AUTH_CACHE_SECONDS = 1
    token, key = token_create(user=user, name="ci")
    assert token_known(key=key) is None  # not yet looked up in this process
    assert token_authenticate(key=key) is not None
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())  # by another process
    assert token_known(key=key) is not None
    auth_clock[0] += 0.85
    assert token_known(key=key) is None
    assert token_authenticate(key=key) is None


def test_token__expired_is_refused_even_from_the_cache(user):
    soon = timezone.now() + dt.timedelta(seconds=30)
    _, key = token_create(user=user, name="ci", expires_at=soon)
    assert token_authenticate(key=key) is not None
    assert token_authenticate(key=key, now=soon + dt.timedelta(seconds=1)) is None


def test_token__last_used_is_recorded_at_most_once_a_minute(user):
    token, key = token_create(user=user, name="ci")
    t0 = timezone.now()
    token_authenticate(key=key, now=t0)
    token.refresh_from_db()
    assert token.last_used_at == t0
    cache.clear()  # the next lookups miss the caches, as they would after their lifetime
    token_cache_clear()
    token_authenticate(key=key, now=t0 + dt.timedelta(seconds=30))
    token.refresh_from_db()
    assert token.last_used_at == t0
    cache.clear()
    token_cache_clear()
    token_authenticate(key=key, now=t0 + dt.timedelta(seconds=61))
    token.refresh_from_db()
    assert token.last_used_at == t0 + dt.timedelta(seconds=61)


def test_token__user_deactivated_is_refused(user):
    _, key = token_create(user=user, name="ci")
    user.is_active = False
    user.save()
    assert client_with(key).get(URL).status_code == 401


def test_token__user_deactivated_after_use_stops_at_once_here(user):
    """Each cached entry carries the user as looked up: a change to the account drops it in this process."""
    _, key = token_create(user=user, name="ci")
    client = client_with(key)
    assert client.get(URL).status_code == 200
    user.is_active = False
    user.save()
    assert client.get(URL).status_code == 401


def test_token__staff_removed_after_use_stops_at_once_here(user):
    other = QueueFactory(name="theirs")  # another owner's queue: only staff may see it without a grant
    user.is_staff = True
    user.save()
    _, key = token_create(user=user, name="ci")
    client = client_with(key)
    assert client.get(f"{URL}theirs/").status_code == 200
    user.is_staff = False
    user.save()
    assert client.get(f"{URL}theirs/").status_code == 404
    assert client.post(f"{URL}theirs/messages/", {"body": "x"}, format="json").status_code == 404
    assert not other.messages.exists()


def test_token__user_deleted_after_use_stops_at_once_here(user):
    """A deleted user's tokens go with them; a cached one answered 200, and its writes 500 (a foreign key)."""
    user.is_staff = True
    user.save()
    QueueFactory(name="jobs")
    _, key = token_create(user=user, name="ci")
    client = client_with(key)
    assert client.get(URL).status_code == 200
    user.delete()
    assert client.get(URL).status_code == 401
    assert client.post(f"{URL}jobs/receive/", {}, format="json").status_code == 401


def test_token__a_sign_in_keeps_the_cached_entry(user, django_assert_num_queries):
    _, key = token_create(user=user, name="ci")
    assert token_authenticate(key=key) is not None
    user.last_login = timezone.now()
    user.save(update_fields=["last_login"])
    with django_assert_num_queries(0):
        assert token_authenticate(key=key) is not None


@pytest.mark.parametrize("known", [True, False], ids=["valid-key", "unknown-key"])
def test_token__no_client_address_is_not_a_500(user, known):
    """gunicorn on a unix socket (behind a proxy) leaves REMOTE_ADDR empty, where django-ratelimit raised."""
    _, key = token_create(user=user, name="ci")
    client = client_with(key if known else "wq_nope")
    assert client.get(URL, REMOTE_ADDR="").status_code == (200 if known else 401)


@pytest.mark.parametrize(
    "header",
    ["Token", "Token a b", "Bearer abc", "Token \u00e9t\u00e9", "Token " + "x" * 5000],
)
def test_token__malformed_header_is_refused(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(URL).status_code == 401


def test_token__several_per_user_revoke_one(user):
    first, key1 = token_create(user=user, name="a")
    _, key2 = token_create(user=user, name="b")
    token_revoke(token=first)
    assert client_with(key1).get(URL).status_code == 401
    assert client_with(key2).get(URL).status_code == 200


def test_token__revoked_while_a_lookup_of_it_runs_here_is_not_cached_again(user, monkeypatch):
    """Under gevent another request of this process can revoke the token while a lookup waits on the
    database; that lookup then stored what it had read before the revocation, for up to 5 s."""
    token, key = token_create(user=user, name="ci")
    from queues.services import tokens

    looked_up = tokens._lookup

    def lookup_then_revoked_meanwhile(digest, now):
        found = looked_up(digest, now)
        token_revoke(token=token)
        return found

    monkeypatch.setattr(tokens, "_lookup", lookup_then_revoked_meanwhile)
    assert token_authenticate(key=key) == token  # the request that began before the revocation
    monkeypatch.setattr(tokens, "_lookup", looked_up)

    assert token_authenticate(key=key) is None
    assert token_known(key=key) is None
