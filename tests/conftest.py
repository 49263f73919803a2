"""Shared fixtures: users, tokens, API clients and queues, built with factories."""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable

import django_ratelimit.core
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from queues.api import throttling
from queues.api.throttling import rate_slices_clear
from queues.models import Delivery, Message, Queue, QueueGrant, ReviewDecision
from queues.services import queue_access_cache_clear, token_cache_clear, token_create
from tests.factories import QueueFactory, UserFactory

requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL: set DATABASE_URL=postgres://...",
)
requires_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL=redis://...")


def function_plans(run: Callable[[], object]) -> list[str]:
    """The plans of the statements PostgreSQL ran inside functions during `run()`, from auto_explain.

    Receive and ack are PL/pgSQL functions (migrations 0006 and 0007): EXPLAIN of a call shows
    only a Function Scan, and the plans that count are the ones the function makes and keeps.
    auto_explain logs each statement's plan as it runs, here to this client. Loading it takes
    a superuser, as the test databases' owner is here; elsewhere the test skips, saying so.
    """
    raw = connection.connection
    plans: list[str] = []

    def keep(diagnostic):
        if "Query Text:" in (diagnostic.message_primary or ""):
            plans.append(diagnostic.message_primary)

    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT auto_explain_load")
        try:
            cursor.execute("LOAD 'auto_explain'")
            for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_format = text"):
                cursor.execute(f"SET LOCAL auto_explain.{setting}")
        except Exception as error:  # psycopg.errors.InsufficientPrivilege, or the module missing
            cursor.execute("ROLLBACK TO SAVEPOINT auto_explain_load")
            pytest.skip(f"needs auto_explain loaded and set by a superuser to read a function's plan: {error}")
        cursor.execute("RELEASE SAVEPOINT auto_explain_load")
        cursor.execute("SET LOCAL client_min_messages = log")
    raw.add_notice_handler(keep)
    try:
        run()
    finally:
        raw.remove_notice_handler(keep)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL auto_explain.log_min_duration = -1")
            cursor.execute("SET LOCAL client_min_messages = notice")
    return plans


def snapshot() -> dict:
    """Full rows of every table an API call could change, to prove a refused call changed nothing."""
    return {
        "users": list(get_user_model().objects.order_by("pk").values()),
        "queues": list(Queue.objects.order_by("id").values()),
        "messages": list(Message.objects.order_by("id").values()),
        "grants": list(QueueGrant.objects.order_by("id").values()),
        "deliveries": list(Delivery.objects.order_by("id").values()),
        "decisions": list(ReviewDecision.objects.order_by("id").values()),
    }


def histories() -> dict[int, list[Delivery]]:
    """Each message's history as operators see it (Message.history): rows written, and a timeout still on its row."""
    return {m.id: m.history() for m in Message.objects.prefetch_related("deliveries")}


def api_client_for(user) -> APIClient:
    """An API client that authenticates as `user` with a fresh token."""
    _, key = token_create(user=user, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture(autouse=True)
def _clear_cache():
    """Authentication, queue and rate-limit state must not leak from one test into the next."""
    cache.clear()
    token_cache_clear()
    queue_access_cache_clear()
    rate_slices_clear()
    yield
    cache.clear()
    token_cache_clear()
    queue_access_cache_clear()
    rate_slices_clear()


@pytest.fixture
def rate_windows_held(monkeypatch):
    """The rate limits' windows do not turn while the test runs.

    django-ratelimit's windows are fixed and aligned to the clock: a key's minute ends once a
    minute, so a test counting a few requests against "3/m" saw its count start over between two
    of them whenever it ran across that moment (the last 4 of 4 answered 401, not 429). The clock
    the windows read stands still at the test's start; everything else keeps the real one.
    """
    now = time.time()
    held = types.SimpleNamespace(time=lambda: now)
    monkeypatch.setattr(django_ratelimit.core, "time", held)
    monkeypatch.setattr(throttling, "time", held)


@pytest.fixture
def queue_deleted_after_lookup(monkeypatch):
    """The API's queue lookup finds the queue, then a concurrent DELETE removes it before the view acts."""
    from queues.api.views import QueueViewSet

    found = QueueViewSet.get_queue

    def get_queue_then_lose_the_race(view, name, need=None):
        queue = found(view, name, need)
        Queue.objects.filter(pk=queue.pk).delete()
        return queue

    monkeypatch.setattr(QueueViewSet, "get_queue", get_queue_then_lose_the_race)


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(staff=True)


@pytest.fixture
def api(user):
    return api_client_for(user)


@pytest.fixture
def other_api(other_user):
    return api_client_for(other_user)


@pytest.fixture
def queue(user):
    return QueueFactory(owner=user, name="jobs")


@pytest.fixture
def requeue_queue(user):
    return QueueFactory(owner=user, name="retry", on_timeout="requeue", max_receives=2)
