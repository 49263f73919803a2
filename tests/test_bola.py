"""Broken object-level authorization sweep, driven by the OpenAPI schema.

Every operation on a queue-scoped path (one with `{name}`) is called by a user who holds no grant on
the target queue, with a body that would work for its owner. Each must answer 404, exactly as for a
queue that does not exist, and leave every table as it was. The same call by the owner must not be a
404, which proves the body reaches the code behind the permission check.

The operations come from the schema, so a new endpoint joins the sweep by itself, and fails it until
BODIES says how to call it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from queues import services
from queues.models import Delivery, Message, ReviewDecision
from queues.services import OutgoingMessage
from tests.conftest import api_client_for, snapshot
from tests.factories import QueueFactory, UserFactory

PREFIX = "/api/v1/queues/{name}"
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")

# How to call each queue-scoped operation, keyed "METHOD <path after /queues/{name}>": the body
# (None for none) built from the handles of `target`. Every operation in the schema needs a row.
BODIES: dict[str, Callable[[dict], dict | None]] = {
    "GET /": lambda h: None,
    "PATCH /": lambda h: {"visibility_timeout": 1, "on_timeout": "requeue"},
    "DELETE /": lambda h: None,
    "POST /messages/": lambda h: {"messages": [{"body": "intruder"}, {"body": "dup", "dedup_id": "d1"}]},
    "POST /receive/": lambda h: {"max_messages": 10, "consumer": "intruder"},
    "POST /ack/": lambda h: {"receipts": [h["receipt"]]},
    "POST /extend/": lambda h: {"receipts": [h["receipt"]], "visibility_timeout": 1},
    "POST /release/": lambda h: {"receipts": [h["receipt"]], "delay_seconds": 0},
    "POST /reject/": lambda h: {"receipts": [h["receipt"]], "reason": "intruder"},
    "POST /purge/": lambda h: None,
    "GET /review/": lambda h: None,
    "POST /review/requeue/": lambda h: {"ids": [h["review_id"]]},
    "POST /review/discard/": lambda h: {"ids": [h["review_id"]], "note": "intruder"},
    "GET /grants/": lambda h: None,
    "GET /grants/{username}/": lambda h: None,
    "PUT /grants/{username}/": lambda h: {"send": True, "receive": True, "manage": True},
    "DELETE /grants/{username}/": lambda h: None,
}


def _queue_scoped_operations() -> list[tuple[str, str]]:
    """(METHOD, path) for every operation the schema lists on a path that names a queue."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if "{name}" in path
        for method in item
        if method in HTTP_METHODS
    )


OPERATIONS = _queue_scoped_operations()


def _key(method: str, path: str) -> str:
    assert path.startswith(PREFIX), f"{path}: a queue-scoped path outside {PREFIX}; extend this sweep"
    return f"{method} {path.removeprefix(PREFIX)}"


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    """Each new test client builds its middleware, where WhiteNoise walks every static file; none is asked for."""
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.startswith("whitenoise.")]


@pytest.fixture
def target(db) -> dict:
    """Alice's queue 'jobs' with something in every table, and Mallory, who has no grant on it.

    Mallory is no stranger: she owns a queue and holds a full grant on another of Alice's, so the
    sweep also proves that access to one queue does not leak to the next.
    """
    alice, carol, mallory = (UserFactory(username=n) for n in ("alice", "carol", "mallory"))
    jobs = QueueFactory(owner=alice, name="jobs")
    QueueFactory(owner=mallory, name="mine")
    shared = QueueFactory(owner=alice, name="shared")
    services.grant_set(queue=shared, username="mallory", send=True, receive=True, manage=True)
    services.grant_set(queue=jobs, username="carol", send=True, receive=False, manage=False)

    past = timezone.now() - dt.timedelta(days=1)
    for body in ("poison", "discarded"):
        services.message_send(queue=jobs, messages=[OutgoingMessage(body=body)], now=past)
        [leased] = services.message_receive(queue=jobs, consumer="alice-worker", user=alice, now=past)
        services.message_reject(queue=jobs, receipts=[leased["receipt"]], reason=body, now=past)
        review_id = leased["id"]
    services.review_discard(queue=jobs, ids=[review_id], operator=alice)
    services.message_send(queue=jobs, messages=[OutgoingMessage(body="to-lease")], now=past)
    [leased] = services.message_receive(queue=jobs, consumer="alice-worker", user=alice)
    services.message_send(queue=jobs, messages=[OutgoingMessage(body="ready", dedup_id="d1")])
    poison = Message.objects.get(body="poison")
    assert poison.status == Message.Status.REVIEW
    assert Delivery.objects.exists() and ReviewDecision.objects.exists()
    return {
        "alice": alice,
        "mallory": mallory,
        "receipt": leased["receipt"],
        "review_id": poison.id,
        "username": carol.username,
    }


def _call(client, method: str, path: str, body):
    raw = "" if body is None else json.dumps(body)
    return client.generic(method, path, raw, content_type="application/json")


def _request(method: str, path: str, handles: dict, queue: str = "jobs"):
    key = _key(method, path)
    if key not in BODIES:
        pytest.fail(f"{key} is queue-scoped but has no entry in BODIES: add one so the BOLA sweep covers it")
    # A path parameter the sweep does not know is a KeyError: it fails here, never silently.
    url = path.format(name=queue, username=handles["username"])
    return url, BODIES[key](handles)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_bola__other_user_gets_404_and_nothing_changes(target, method, path):
    url, body = _request(method, path, target)
    missing_url, _ = _request(method, path, target, queue="no-such-queue")
    mallory = api_client_for(target["mallory"])
    before = snapshot()

    response = _call(mallory, method, url, body)
    missing = _call(mallory, method, missing_url, body)

    assert response.status_code == 404, response.content[:300]
    # Indistinguishable from a queue that does not exist.
    assert response.json() == missing.json() == {"detail": "Queue not found.", "code": "not_found"}
    assert snapshot() == before


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_bola__owner_with_the_same_body_is_answered(target, method, path):
    """The sanity half: the bodies above are real requests, so the 404s are the permission check's."""
    url, body = _request(method, path, target)

    response = _call(api_client_for(target["alice"]), method, url, body)

    assert 200 <= response.status_code < 300, (response.status_code, response.content[:300])


def test_bola__sweep_covers_queue_scoped_operations():
    """The schema lists the endpoints this project has; a table row for a removed one is stale."""
    keys = {_key(method, path) for method, path in OPERATIONS}

    assert len(OPERATIONS) >= 17
    assert set(BODIES) == keys, {"missing": sorted(keys - set(BODIES)), "stale": sorted(set(BODIES) - keys)}


def test_bola__served_schema_lists_the_same_operations(client, db):
    """The sweep reads the generator; the schema clients download must be the same one."""
    schema = json.loads(client.get("/api/v1/schema/?format=json").content)
    served = sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if "{name}" in path
        for method in item
        if method in HTTP_METHODS
    )

    assert served == OPERATIONS
