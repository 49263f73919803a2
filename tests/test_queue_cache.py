"""The hot path keeps a queue and the caller's grant for QUEUE_CACHE_SECONDS; changes still take effect.

A change made through this process (the API, the services, the admin's model saves) clears the
cache at once. A change made by another process can only be seen when the entry runs out: here
that is a write that bypasses this process's services and signals, as another process's would.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from queues import services
from queues.models import Message, Queue, QueueGrant
from tests.conftest import api_client_for
from tests.factories import QueueFactory, UserFactory


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    """Each new test client builds its middleware, where WhiteNoise walks every static file; none is asked for."""
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.startswith("whitenoise.")]


@pytest.fixture
def owner(db):
    return UserFactory(username="owner")


@pytest.fixture
def worker(db):
    return UserFactory(username="worker")


@pytest.fixture
def jobs(owner):
    return QueueFactory(owner=owner, name="jobs", visibility_timeout=30)


@pytest.fixture
def owner_api(owner):
    return api_client_for(owner)


@pytest.fixture
def worker_api(worker, jobs, owner_api):
    response = owner_api.put("/api/v1/queues/jobs/grants/worker/", {"send": True, "receive": True}, format="json")
    assert response.status_code == 201, response.content
    return api_client_for(worker)


def post(client, action: str, body: dict):
    return client.post(f"/api/v1/queues/jobs/{action}/", body, format="json")


def warm(client, django_assert_num_queries) -> None:
    """Two sends: the first teaches the process the token and the queue, the second is one statement."""
    assert post(client, "messages", {"body": "warm"}).status_code == 201
    post(client, "messages", {"body": "warm"})
    with django_assert_num_queries(1):
        assert post(client, "messages", {"body": "warm"}).status_code == 201


def test_queue_cache__grant_deleted_here_ends_access_at_once(owner_api, worker_api, django_assert_num_queries):
    warm(worker_api, django_assert_num_queries)
    assert owner_api.delete("/api/v1/queues/jobs/grants/worker/").status_code == 204
    assert post(worker_api, "messages", {"body": "after"}).status_code == 404
    assert post(worker_api, "receive", {}).status_code == 404
    assert not Message.objects.filter(body="after").exists()


def test_queue_cache__grant_narrowed_here_applies_at_once(owner_api, worker_api, django_assert_num_queries):
    warm(worker_api, django_assert_num_queries)
    response = owner_api.put("/api/v1/queues/jobs/grants/worker/", {"receive": True}, format="json")
    assert response.status_code == 200
    response = post(worker_api, "messages", {"body": "after"})
    assert response.status_code == 403, response.content
    assert post(worker_api, "receive", {}).status_code == 200


def test_queue_cache__settings_changed_here_apply_to_the_next_receive(owner_api, jobs, django_assert_num_queries):
    warm(owner_api, django_assert_num_queries)
    response = owner_api.patch("/api/v1/queues/jobs/", {"visibility_timeout": 600}, format="json")
    assert response.status_code == 200, response.content
    before = dt.datetime.now(dt.UTC)
    [message] = post(owner_api, "receive", {}).json()["messages"]
    expires = dt.datetime.fromisoformat(message["lease_expires_at"].replace("Z", "+00:00"))
    assert expires >= before + dt.timedelta(seconds=599)


def test_queue_cache__a_model_save_as_the_admin_does_clears_it(owner_api, jobs, django_assert_num_queries):
    warm(owner_api, django_assert_num_queries)
    jobs.visibility_timeout = 900
    jobs.save()
    before = dt.datetime.now(dt.UTC)
    [message] = post(owner_api, "receive", {}).json()["messages"]
    expires = dt.datetime.fromisoformat(message["lease_expires_at"].replace("Z", "+00:00"))
    assert expires >= before + dt.timedelta(seconds=899)


def test_queue_cache__queue_deleted_here_is_gone_at_once(owner_api, jobs, django_assert_num_queries):
    warm(owner_api, django_assert_num_queries)
    assert owner_api.delete("/api/v1/queues/jobs/").status_code == 204
    assert post(owner_api, "messages", {"body": "after"}).status_code == 404
    assert post(owner_api, "receive", {}).status_code == 404
    assert not Message.objects.exists()


def test_queue_cache__a_change_made_elsewhere_is_seen_within_its_time(
    owner_api, jobs, settings, django_assert_num_queries
):
    settings.WONDERQ_QUEUE_CACHE_SECONDS = 0.5
    warm(owner_api, django_assert_num_queries)
    Queue.objects.filter(pk=jobs.pk).update(visibility_timeout=900)  # no signal: as another process
    started = time.monotonic()
    [message] = post(owner_api, "receive", {}).json()["messages"]
    expires = dt.datetime.fromisoformat(message["lease_expires_at"].replace("Z", "+00:00"))
    if time.monotonic() - started < 0.4:  # still within the entry's time: the old setting
        assert expires <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31)
    time.sleep(0.6)
    before = dt.datetime.now(dt.UTC)
    [message] = post(owner_api, "receive", {}).json()["messages"]
    expires = dt.datetime.fromisoformat(message["lease_expires_at"].replace("Z", "+00:00"))
    assert expires >= before + dt.timedelta(seconds=899)


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at commit: each request must commit
def test_queue_cache__a_send_to_a_queue_deleted_elsewhere_is_refused(owner_api, jobs, django_assert_num_queries):
    """The cached queue still names the deleted row: the message's foreign key refuses the insert,
    and the normal stack answers 404. Nothing is stored for a queue that no longer exists."""
    warm(owner_api, django_assert_num_queries)
    with connection.cursor() as cursor:  # no signal: as another process
        cursor.execute(f"DELETE FROM {Message._meta.db_table} WHERE queue_id = %s", [jobs.pk])
        cursor.execute(f"DELETE FROM {Queue._meta.db_table} WHERE id = %s", [jobs.pk])
    response = post(owner_api, "messages", {"body": "after"})
    assert response.status_code == 404, response.content
    assert not Message.objects.exists()


def test_queue_cache__unknown_queues_are_not_kept(owner_api, jobs):
    for i in range(50):
        assert post(owner_api, "messages", {"body": "x"}).status_code == 201
        owner_api.post(f"/api/v1/queues/nope-{i}/messages/", {"body": "x"}, format="json")
    assert set(services.queues._access) == {("jobs", jobs.owner_id)}
    assert not QueueGrant.objects.exists()


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_queue_cache__a_setting_that_is_not_seconds_stops_start_up(tmp_path, value):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1"}
    env["WONDERQ_QUEUE_CACHE_SECONDS"] = value
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "WONDERQ_QUEUE_CACHE_SECONDS must be 0 or more seconds" in run.stderr


@pytest.mark.django_db(transaction=True)
def test_queue_cache__cleared_again_when_the_change_commits(jobs, owner):
    """A lookup between the change and its commit still reads the old row and caches it; the commit clears it."""
    stale = Queue.objects.get(pk=jobs.pk)
    with transaction.atomic():
        services.queue_update(queue=jobs, visibility_timeout=900)
        services.queues._access[("jobs", owner.pk)] = (time.monotonic() + 60, stale, None)  # as that lookup would
    queue, _ = services.queue_access_cached(name="jobs", user_id=owner.pk)
    assert queue.visibility_timeout == 900
