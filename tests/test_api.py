"""The v1 HTTP API through DRF's APIClient: every endpoint of DESIGN.md's table and its error paths.

Data is set up with the services (with `now=` where time matters) and checked in the database,
so a test proves what the API did, not only what it answered.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from queues import services
from queues.api import errors
from queues.models import ApiToken, Delivery, Message, Queue, ReviewDecision
from queues.services import OutgoingMessage
from tests.conftest import api_client_for, snapshot
from tests.factories import QueueFactory, QueueGrantFactory, UserFactory

API = "/api/v1"
MAX_REQUEST_BYTES = 2 * 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    """Two costs that would dominate this file's runtime and that the API does not depend on.

    Every user the factories make gets a password, hashed with a deliberately slow PBKDF2; and
    every new test client builds its middleware, where WhiteNoise (with finders) walks every
    static file. No test here asks for a static file.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.startswith("whitenoise.")]


def qurl(name: str, action: str = "") -> str:
    return f"{API}/queues/{name}/" + (f"{action}/" if action else "")


def post(client, path: str, data=None):
    return client.post(path, data if data is not None else {}, format="json")


def post_raw(client, path: str, raw: bytes | str, content_type: str = "application/json"):
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return client.generic("POST", path, raw, content_type=content_type)


def send(queue: Queue, body: str = "m", now: dt.datetime | None = None, **fields) -> int:
    """Send one message through the service; its id."""
    [sent] = services.message_send(queue=queue, messages=[OutgoingMessage(body=body, **fields)], now=now)
    return sent.id


def lease(queue: Queue, n: int = 1, **kwargs) -> list[dict]:
    """Receive through the service; the leased messages with their receipts."""
    leased = services.message_receive(queue=queue, max_messages=n, **kwargs)
    assert len(leased) == n
    return leased


def to_review(queue: Queue, body: str = "poison", consumer: str = "", reason: str = "", now=None) -> int:
    """Send, receive and reject one message: its id, now in review.

    By default it all happens a day ago, so the receive takes this message and no other.
    """
    now = now or timezone.now() - dt.timedelta(days=1)
    message_id = send(queue, body, now=now)
    [leased] = lease(queue, consumer=consumer, now=now)
    services.message_reject(queue=queue, receipts=[leased["receipt"]], reason=reason, now=now)
    return message_id


def has_key(data, key: str) -> bool:
    """Whether `key` names a field anywhere in a (nested) DRF error body."""
    if isinstance(data, dict):
        return key in data or any(has_key(value, key) for value in data.values())
    if isinstance(data, list):
        return any(has_key(value, key) for value in data)
    return False


def assert_refused(response, status_code: int, before: int, field: str | None = None, code: str | None = None):
    """The request got `status_code` as JSON, named `field` / `code`, and stored no message."""
    assert response.status_code == status_code, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    data = response.json()
    if field:
        assert has_key(data, field), data
    if code:
        assert data["code"] == code, data
    assert Message.objects.count() == before


# --- queues: list, create -----------------------------------------------------------------


def test_queue_list__only_visible_queues_with_counts(api, user, other_user, queue):
    QueueFactory(owner=other_user, name="theirs")
    shared = QueueFactory(owner=other_user, name="shared")
    QueueGrantFactory(queue=shared, user=user, send_only=True)
    send(queue)
    send(queue)
    send(queue, delay_seconds=60)

    response = api.get(f"{API}/queues/")

    assert response.status_code == 200
    by_name = {item["name"]: item for item in response.json()}
    assert set(by_name) == {"jobs", "shared"}
    assert by_name["jobs"]["ready"] == 2
    assert by_name["jobs"]["delayed"] == 1
    assert by_name["jobs"]["leased"] == 0
    assert by_name["jobs"]["review"] == 0
    assert by_name["jobs"]["owner"] == user.username
    assert by_name["shared"]["ready"] == 0
    assert by_name["shared"]["oldest_ready_age_seconds"] is None


def test_queue_list__staff_sees_every_queue(staff_user, queue, other_user):
    QueueFactory(owner=other_user, name="theirs")

    response = api_client_for(staff_user).get(f"{API}/queues/")

    assert response.status_code == 200
    assert [item["name"] for item in response.json()] == ["jobs", "theirs"]


def test_queue_create__201_with_defaults(api, user):
    response = post(api, f"{API}/queues/", {"name": "new-Queue_1"})

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "new-Queue_1"
    assert data["owner"] == user.username
    assert data["visibility_timeout"] == 30
    assert data["on_timeout"] == "review"
    assert data["ready"] == data["delayed"] == data["leased"] == data["review"] == 0
    assert Queue.objects.get(name="new-Queue_1").owner == user


def test_queue_create__every_setting(api):
    settings = {
        "visibility_timeout": 43200,
        "on_timeout": "requeue",
        "max_receives": 1000,
        "delay_seconds": 900,
        "max_message_bytes": 1,
    }

    response = post(api, f"{API}/queues/", {"name": "q", **settings})

    assert response.status_code == 201, response.content
    assert {key: response.json()[key] for key in settings} == settings
    assert Queue.objects.filter(name="q", **settings).exists()


def test_queue_create__duplicate_name_409(api, other_api, queue):
    response = post(api, f"{API}/queues/", {"name": "jobs", "visibility_timeout": 5})

    assert response.status_code == 409
    assert response.json()["code"] == "queue_exists"
    assert Queue.objects.get(name="jobs").visibility_timeout == 30
    # Another user cannot take the name either.
    assert post(other_api, f"{API}/queues/", {"name": "jobs"}).status_code == 409


@pytest.mark.parametrize(
    "name",
    ["", "has space", "a" * 81, "jobs\n", " jobs", "jobs\t", "ünïcode", "a/b", "a.b", None, ["jobs"], 12345, 1.5],
    ids=[
        *("empty", "space", "81-chars", "newline", "lead-space", "tab", "non-ascii"),
        *("slash", "dot", "null", "list", "number", "float"),
    ],
)
def test_queue_create__bad_name_400(api, name):
    response = post(api, f"{API}/queues/", {"name": name})

    assert response.status_code == 400, response.content
    assert "name" in response.json()
    assert not Queue.objects.exists()


def test_queue_create__missing_name_400(api):
    response = post(api, f"{API}/queues/", {"visibility_timeout": 10})

    assert response.status_code == 400
    assert "name" in response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility_timeout", -1),
        ("visibility_timeout", 43201),
        ("visibility_timeout", 10**30),
        ("delay_seconds", -1),
        ("delay_seconds", 901),
        ("max_receives", 0),
        ("max_receives", 1001),
        ("max_message_bytes", 0),
        ("max_message_bytes", 256 * 1024 + 1),
        ("on_timeout", "drop"),
    ],
)
def test_queue_create__out_of_range_400_names_field(api, field, value):
    response = post(api, f"{API}/queues/", {"name": "q", field: value})

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Queue.objects.exists()


@pytest.mark.parametrize("value", ["30", 30.0, 30.5, True, None, [30], {"s": 30}])
@pytest.mark.parametrize("field", ["visibility_timeout", "delay_seconds", "max_receives", "max_message_bytes"])
def test_queue_create__non_integer_400_names_field(api, field, value):
    response = post(api, f"{API}/queues/", {"name": "q", field: value})

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Queue.objects.exists()


def test_queue_create__unknown_field_400(api):
    response = post(api, f"{API}/queues/", {"name": "q", "visibilty_timeout": 10})

    assert response.status_code == 400
    assert "visibilty_timeout" in response.json()
    assert not Queue.objects.exists()


@pytest.mark.parametrize("raw", [b"[]", b'"q"', b"null", b"42"])
def test_queue_create__non_object_body_400(api, raw):
    response = post_raw(api, f"{API}/queues/", raw)

    assert response.status_code == 400
    assert not Queue.objects.exists()


# --- queues: retrieve, update, delete, purge -----------------------------------------------


def test_queue_retrieve__live_counts(api, queue):
    now = timezone.now()
    send(queue, "old", now=now - dt.timedelta(seconds=100))
    send(queue, "new")
    send(queue, "later", delay_seconds=300)
    send(queue, "to-lease", now=now - dt.timedelta(seconds=200))
    to_review(queue, now=now - dt.timedelta(seconds=300))
    # Oldest first: receive takes the one sent 200 s ago.
    [leased] = lease(queue)
    assert leased["body"] == "to-lease"

    response = api.get(qurl("jobs"))

    assert response.status_code == 200
    data = response.json()
    assert (data["ready"], data["delayed"], data["leased"], data["review"]) == (2, 1, 1, 1)
    assert 99 <= data["oldest_ready_age_seconds"] < 130
    assert data["name"] == "jobs"
    assert data["max_message_bytes"] == 256 * 1024


def test_queue_retrieve__empty_queue_has_no_oldest_age(api, queue):
    data = api.get(qurl("jobs")).json()

    assert (data["ready"], data["delayed"], data["leased"], data["review"]) == (0, 0, 0, 0)
    assert data["oldest_ready_age_seconds"] is None


def test_queue_retrieve__expired_lease_counted_where_time_puts_it(api, queue, requeue_queue):
    """No sweep has run: an expired lease already counts as review (review queue) or ready (requeue queue)."""
    past = timezone.now() - dt.timedelta(seconds=60)
    for q in (queue, requeue_queue):
        send(q, now=past)
        lease(q, now=past, visibility_timeout=10)
    assert Message.objects.filter(status=Message.Status.LEASED).count() == 2

    jobs = api.get(qurl("jobs")).json()
    retry = api.get(qurl("retry")).json()

    assert (jobs["ready"], jobs["leased"], jobs["review"]) == (0, 0, 1)
    assert (retry["ready"], retry["leased"], retry["review"]) == (1, 0, 0)
    # Ready since its lease ran out, 50 s ago, as the sweep would have it (available_at = lease_expires_at).
    assert jobs["oldest_ready_age_seconds"] is None
    assert 49 <= retry["oldest_ready_age_seconds"] < 80


def test_queue_retrieve__oldest_ready_age_is_the_older_of_ready_and_run_out(api, requeue_queue):
    now = timezone.now()
    send(requeue_queue, "run out", now=now - dt.timedelta(seconds=60))
    lease(requeue_queue, now=now - dt.timedelta(seconds=60), visibility_timeout=10)  # ready 50 s ago
    send(requeue_queue, "ready", now=now - dt.timedelta(seconds=20))

    assert 49 <= api.get(qurl("retry")).json()["oldest_ready_age_seconds"] < 80
    send(requeue_queue, "older", now=now - dt.timedelta(seconds=100))
    assert 99 <= api.get(qurl("retry")).json()["oldest_ready_age_seconds"] < 130


@pytest.mark.parametrize(
    "name", ["nope", "b" * 80, "a" * 81, "%00", "jobs%00", "%C3%BC"], ids=["nope", "80", "81", "nul", "jobs-nul", "u"]
)
def test_queue_retrieve__unknown_or_impossible_name_404(api, user, queue, name):
    QueueFactory(owner=user, name="a" * 80)

    response = api.get(qurl(name))

    assert response.status_code == 404, response.content[:300]
    assert response.json() == {"detail": "Queue not found.", "code": "not_found"}


def test_queue_retrieve__long_name_does_not_find_its_80_char_prefix(api, user):
    """A name of 81 characters cannot exist; it must not resolve to the queue named by its first 80."""
    QueueFactory(owner=user, name="a" * 80)

    assert api.get(qurl("a" * 80)).status_code == 200
    assert api.get(qurl("a" * 81)).status_code == 404
    assert post(api, qurl("a" * 81, "messages"), {"body": "x"}).status_code == 404
    assert not Message.objects.exists()


def test_queue_update__changes_settings(api, queue):
    response = api.patch(
        qurl("jobs"), {"visibility_timeout": 5, "on_timeout": "requeue", "max_receives": 3}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["visibility_timeout"] == 5
    queue.refresh_from_db()
    assert (queue.visibility_timeout, queue.on_timeout, queue.max_receives) == (5, "requeue", 3)
    assert queue.delay_seconds == 0


def test_queue_update__empty_body_changes_nothing(api, queue):
    response = api.patch(qurl("jobs"), {}, format="json")

    assert response.status_code == 200
    queue.refresh_from_db()
    assert queue.visibility_timeout == 30


@pytest.mark.parametrize("payload", [{}, {"visibility_timeout": 5}])
def test_queue_update__queue_deleted_meanwhile_404(api, queue, queue_deleted_after_lookup, payload):
    """Found by the fuzzer: a PATCH whose queue a concurrent DELETE removed after the lookup was a 500."""
    response = api.patch(qurl("jobs"), payload, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not Queue.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"visibility_timeout": 43201}, "visibility_timeout"),
        ({"visibility_timeout": "5"}, "visibility_timeout"),
        ({"max_receives": 0}, "max_receives"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"on_timeout": "nope"}, "on_timeout"),
        ({"name": "renamed"}, "name"),
        ({"owner": "someone"}, "owner"),
    ],
)
def test_queue_update__invalid_400_changes_nothing(api, queue, payload, field):
    before = snapshot()

    response = api.patch(qurl("jobs"), payload, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert snapshot() == before


def test_queue_update__put_not_allowed(api, queue):
    assert api.put(qurl("jobs"), {"visibility_timeout": 5}, format="json").status_code == 405


def test_queue_delete__204_and_messages_gone(api, queue, user):
    send(queue)
    lease(queue)
    to_review(queue)
    send(queue)
    kept = QueueFactory(owner=user, name="kept")
    send(kept)

    response = api.delete(qurl("jobs"))

    assert response.status_code == 204
    assert not Queue.objects.filter(name="jobs").exists()
    assert list(Message.objects.values_list("queue__name", flat=True)) == ["kept"]
    assert not Delivery.objects.exclude(queue=kept).exists()
    assert api.get(qurl("jobs")).status_code == 404
    assert api.delete(qurl("jobs")).status_code == 404


def test_queue_purge__deletes_ready_and_delayed_only(api, queue, user):
    send(queue)
    send(queue, delay_seconds=100)
    leased_id = send(queue, now=timezone.now() - dt.timedelta(seconds=10))
    lease(queue)
    review_id = to_review(queue)
    send(queue)
    other = QueueFactory(owner=user, name="other")
    other_id = send(other)

    response = post(api, qurl("jobs", "purge"))

    assert response.status_code == 200
    assert response.json() == {"purged": 3}
    assert set(Message.objects.values_list("id", flat=True)) == {leased_id, review_id, other_id}
    assert post(api, qurl("jobs", "purge")).json() == {"purged": 0}


def test_queue_purge__a_lease_run_out_in_a_requeue_queue_is_ready_and_purged(api, requeue_queue):
    """No sweep has run: what the counts call ready is purged, as if the sweep had, and not delivered after."""
    past = timezone.now() - dt.timedelta(seconds=60)
    send(requeue_queue, "redeliverable", now=past)
    lease(requeue_queue, now=past, visibility_timeout=10, consumer="slow")
    spent = send(requeue_queue, "spent", now=past)
    for _ in range(2):  # max_receives is 2: the second lease running out sends it to review
        Message.objects.filter(id=spent).update(status=Message.Status.READY)
        [held] = lease(requeue_queue, now=past, visibility_timeout=10)
        assert held["id"] == spent
    assert api.get(qurl("retry")).json()["ready"] == 1

    response = post(api, qurl("retry", "purge"))

    assert response.json() == {"purged": 1}
    counts = api.get(qurl("retry")).json()
    assert (counts["ready"], counts["leased"], counts["review"]) == (0, 0, 1)
    assert post(api, qurl("retry", "receive")).json() == {"messages": []}
    assert list(Message.objects.values_list("id", "status")) == [(spent, Message.Status.REVIEW)]
    # The purged message's delivery was recorded as the sweep records it.
    assert list(Delivery.objects.values_list("consumer", "outcome")) == [("slow", "expired")]


def test_queue_purge__a_lease_run_out_in_a_review_queue_stays_for_review(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    held = send(queue, now=past)
    lease(queue, now=past, visibility_timeout=10)
    send(queue)

    assert post(api, qurl("jobs", "purge")).json() == {"purged": 1}
    assert list(Message.objects.values_list("id", "status")) == [(held, Message.Status.REVIEW)]


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('{"not json', "JSON parse error"),
        ('{"ids": [1], "status": "review"}', "ids"),
        ('["everything"]', "Expected a dictionary"),
        ("null", "No data provided"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/queues/jobs/purge/"),
        ("DELETE", "/api/v1/queues/jobs/"),
        ("DELETE", "/api/v1/queues/jobs/grants/bob/"),
    ],
)
def test_no_body_calls__a_body_with_anything_in_it_is_400_and_changes_nothing(api, queue, method, path, raw, named):
    """Purge and the deletes take no fields: one a client thinks narrows them must not purge or delete everything."""
    send(queue)
    send(queue, delay_seconds=100)
    QueueGrantFactory(queue=queue, user=UserFactory(username="bob"), can_send=True)
    before = snapshot()

    response = api.generic(method, path, raw.encode(), content_type="application/json")

    assert response.status_code == 400, response.content
    assert named in json.dumps(response.json())
    assert snapshot() == before


@pytest.mark.parametrize("raw", [b"", b"{}"])
def test_no_body_calls__an_empty_body_or_object_is_accepted(api, queue, raw):
    send(queue)
    QueueGrantFactory(queue=queue, user=UserFactory(username="bob"), can_send=True)

    assert api.generic("POST", qurl("jobs", "purge"), raw, content_type="application/json").json() == {"purged": 1}
    assert api.generic("DELETE", qurl("jobs", "grants/bob"), raw, content_type="application/json").status_code == 204
    assert api.generic("DELETE", qurl("jobs"), raw, content_type="application/json").status_code == 204
    assert not Queue.objects.filter(name="jobs").exists()


# --- send ---------------------------------------------------------------------------------


def test_send__single_201(api, queue):
    response = post(api, qurl("jobs", "messages"), {"body": "hello"})

    assert response.status_code == 201, response.content
    message = Message.objects.get()
    assert response.json() == {"ids": [message.id], "messages": [{"id": message.id, "duplicate": False}]}
    assert (message.body, message.status, message.attributes, message.queue) == ("hello", "ready", {}, queue)
    assert message.available_at == message.sent_at


def test_send__batch_201_ids_in_order(api, queue):
    response = post(api, qurl("jobs", "messages"), {"messages": [{"body": f"m{i}"} for i in range(5)]})

    assert response.status_code == 201, response.content
    ids = response.json()["ids"]
    assert len(ids) == 5
    assert [Message.objects.get(id=i).body for i in ids] == [f"m{i}" for i in range(5)]
    assert [m["duplicate"] for m in response.json()["messages"]] == [False] * 5


def test_send__batch_of_exactly_the_limit_201(api, queue):
    response = post(api, qurl("jobs", "messages"), {"messages": [{"body": "x"}] * 100})

    assert response.status_code == 201
    assert Message.objects.count() == 100


def test_send__attributes_round_trip(api, queue):
    attributes = {"kind": "invoice", "n": 3, "ratio": 0.5, "urgent": True, "big": 10**20, "a.b-c_d": "v"}

    post(api, qurl("jobs", "messages"), {"body": "x", "attributes": attributes})
    [received] = post(api, qurl("jobs", "receive")).json()["messages"]

    assert received["attributes"] == attributes
    assert Message.objects.get().attributes == attributes


def test_send__unicode_text_round_trips(api, queue):
    # A surrogate *pair* escape is an ordinary emoji; tab, LF, CR and DEL are characters SQS accepts.
    raw = b'{"body": "caf\\u00e9 \\ud83d\\ude00 \\t\\n\\r \\u007f \xe2\x82\xac"}'

    response = post_raw(api, qurl("jobs", "messages"), raw)

    assert response.status_code == 201, response.content
    expected = "café \U0001f600 \t\n\r \x7f €"
    assert Message.objects.get().body == expected
    assert post(api, qurl("jobs", "receive")).json()["messages"][0]["body"] == expected


def test_send__delay_seconds_counted_delayed_not_receivable(api, queue):
    response = post(api, qurl("jobs", "messages"), {"body": "later", "delay_seconds": 60})

    assert response.status_code == 201
    message = Message.objects.get()
    assert 59 <= (message.available_at - message.sent_at).total_seconds() <= 61
    counts = api.get(qurl("jobs")).json()
    assert (counts["ready"], counts["delayed"]) == (0, 1)
    assert post(api, qurl("jobs", "receive")).json() == {"messages": []}
    assert Message.objects.get().status == "ready"


def test_send__queue_default_delay_and_explicit_zero(api, user):
    QueueFactory(owner=user, name="slow", delay_seconds=120)

    post(api, qurl("slow", "messages"), {"body": "default"})
    post(api, qurl("slow", "messages"), {"body": "now", "delay_seconds": 0})

    [received] = post(api, qurl("slow", "receive"), {"max_messages": 10}).json()["messages"]
    assert received["body"] == "now"
    assert api.get(qurl("slow")).json()["delayed"] == 1


def test_send__dedup_id_within_window_returns_same_id(api, queue):
    first = post(api, qurl("jobs", "messages"), {"body": "a", "dedup_id": "order-42"})
    second = post(api, qurl("jobs", "messages"), {"body": "b", "dedup_id": "order-42"})

    assert first.status_code == second.status_code == 201
    [first_id] = first.json()["ids"]
    assert second.json() == {"ids": [first_id], "messages": [{"id": first_id, "duplicate": True}]}
    assert list(Message.objects.values_list("body", flat=True)) == ["a"]


def test_send__dedup_id_repeated_within_one_batch(api, queue):
    response = post(
        api,
        qurl("jobs", "messages"),
        {"messages": [{"body": "a", "dedup_id": "d"}, {"body": "b"}, {"body": "c", "dedup_id": "d"}]},
    )

    assert response.status_code == 201
    first, plain, repeat = response.json()["messages"]
    assert repeat == {"id": first["id"], "duplicate": True}
    assert not first["duplicate"] and not plain["duplicate"]
    assert Message.objects.count() == 2


def test_send__dedup_id_is_per_queue(api, user, queue):
    QueueFactory(owner=user, name="other")

    a = post(api, qurl("jobs", "messages"), {"body": "a", "dedup_id": "d"}).json()
    b = post(api, qurl("other", "messages"), {"body": "b", "dedup_id": "d"}).json()

    assert a["ids"] != b["ids"]
    assert not b["messages"][0]["duplicate"]


def test_send__dedup_id_after_window_is_new(api, queue):
    old_id = send(queue, "old", now=timezone.now() - dt.timedelta(seconds=301), dedup_id="d")

    response = post(api, qurl("jobs", "messages"), {"body": "new", "dedup_id": "d"})

    assert response.status_code == 201
    assert response.json()["messages"][0]["duplicate"] is False
    assert response.json()["ids"] != [old_id]
    assert Message.objects.count() == 2


def test_send__batch_over_limit_400(api, queue):
    response = post(api, qurl("jobs", "messages"), {"messages": [{"body": "x"}] * 101})

    assert_refused(response, 400, 0, field="messages")


@pytest.mark.parametrize("messages", [[], None, {}, "x", {"body": "x"}], ids=["empty", "null", "dict", "str", "obj"])
def test_send__empty_or_malformed_batch_400(api, queue, messages):
    response = post(api, qurl("jobs", "messages"), {"messages": messages})

    assert_refused(response, 400, 0, field="messages")


def test_send__batch_with_one_bad_message_stores_nothing(api, queue):
    send(queue)
    response = post(api, qurl("jobs", "messages"), {"messages": [{"body": "ok"}, {"body": 5}, {"body": "ok"}]})

    assert_refused(response, 400, 1, field="body")


def test_send__batch_mixed_with_single_fields_400(api, queue):
    response = post(api, qurl("jobs", "messages"), {"messages": [{"body": "x"}], "body": "y"})

    assert_refused(response, 400, 0, field="body")


@pytest.mark.parametrize(
    "payload",
    [
        {"body": "x" * 11},
        {"body": "é" * 6},  # 6 characters, 12 UTF-8 bytes
        {"body": "x" * 5, "attributes": {"key": "value"}},  # body fits; body plus attributes do not
        {"messages": [{"body": "ok"}, {"body": "x" * 11}]},
    ],
    ids=["ascii", "multibyte", "attributes", "in-batch"],
)
def test_send__body_over_queue_max_message_bytes_400(api, user, payload):
    QueueFactory(owner=user, name="tiny", max_message_bytes=10)

    response = post(api, qurl("tiny", "messages"), payload)

    assert_refused(response, 400, 0, field="body")


def test_send__body_at_queue_max_message_bytes_201(api, user):
    QueueFactory(owner=user, name="tiny", max_message_bytes=10)

    assert post(api, qurl("tiny", "messages"), {"body": "é" * 5}).status_code == 201


def test_send__body_over_default_limit_400(api, queue):
    response = post(api, qurl("jobs", "messages"), {"body": "x" * (256 * 1024 + 1)})

    assert_refused(response, 400, 0, field="body")
    assert post(api, qurl("jobs", "messages"), {"body": "x" * (256 * 1024)}).status_code == 201


def test_send__request_over_2_mib_413_json(api, queue):
    raw = json.dumps({"body": "x" * MAX_REQUEST_BYTES}).encode()

    response = post_raw(api, qurl("jobs", "messages"), raw)

    assert_refused(response, 413, 0, code="request_too_large")


def test_send__request_over_2_mib_as_a_batch_413(api, queue):
    raw = json.dumps({"messages": [{"body": "x" * 200_000}] * 11}).encode()
    assert len(raw) > MAX_REQUEST_BYTES

    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 413, 0, code="request_too_large")


# Raw JSON text, so the escapes reach the parser exactly as a client would send them.
FORBIDDEN_CHARACTER_BODIES = {
    "nul-in-body": r'{"body": "a\u0000b"}',
    "lone-high-surrogate": r'{"body": "a\ud800b"}',
    "lone-low-surrogate": r'{"body": "\udc00"}',
    "reversed-pair": r'{"body": "\ude00\ud83d"}',
    "nul-in-attribute-value": r'{"body": "x", "attributes": {"k": "\u0000"}}',
    "nul-in-attribute-key": r'{"body": "x", "attributes": {"k\u0000": "v"}}',
    "surrogate-in-attribute-key": r'{"body": "x", "attributes": {"\ud800": "v"}}',
    "surrogate-in-attribute-value": r'{"body": "x", "attributes": {"k": "\udfff"}}',
    "nul-nested-in-attributes": r'{"body": "x", "attributes": {"k": {"deeper": ["\u0000"]}}}',
    "surrogate-nested-key": r'{"body": "x", "attributes": {"k": {"\ud800": 1}}}',
    "nul-in-dedup-id": r'{"body": "x", "dedup_id": "a\u0000"}',
    "nul-in-unknown-field": r'{"body": "x", "extra\u0000": 1}',
    "nul-in-batch-body": r'{"messages": [{"body": "ok"}, {"body": "\u0000"}]}',
    "surrogate-in-batch-attribute": r'{"messages": [{"body": "ok", "attributes": {"k": "\ud800"}}]}',
    "control-u0001": r'{"body": "a\u0001b"}',
    "control-u001f": r'{"body": "\u001f"}',
    "control-u000b": r'{"body": "\u000b"}',
    "non-character-ufffe": r'{"body": "\ufffe"}',
    "non-character-uffff": r'{"body": "x\uffff"}',
    "control-in-attribute-value": r'{"body": "x", "attributes": {"k": "\u0001"}}',
    "control-in-attribute-key": r'{"body": "x", "attributes": {"k\u0001": "v"}}',
    "non-character-in-attribute-value": r'{"body": "x", "attributes": {"k": "\ufffe"}}',
    "control-in-batch-body": r'{"messages": [{"body": "\u0002"}]}',
    "control-in-dedup-id": r'{"body": "x", "dedup_id": "a\u0001"}',
}


@pytest.mark.parametrize("raw", FORBIDDEN_CHARACTER_BODIES.values(), ids=FORBIDDEN_CHARACTER_BODIES.keys())
def test_send__forbidden_characters_400(api, queue, raw):
    send(queue)

    response = post_raw(api, qurl("jobs", "messages"), raw)

    assert_refused(response, 400, 1)


def test_send__raw_control_character_bytes_400(api, queue):
    """A control character sent as a raw byte inside a string is invalid JSON, not a stored message."""
    assert_refused(post_raw(api, qurl("jobs", "messages"), b'{"body": "a\x01b"}'), 400, 0)


@pytest.mark.parametrize("body", [1, 1.5, None, [], ["x"], {}, {"text": "x"}, True], ids=repr)
def test_send__non_string_body_400(api, queue, body):
    assert_refused(post(api, qurl("jobs", "messages"), {"body": body}), 400, 0, field="body")


@pytest.mark.parametrize("dedup_id", [7, 1e2, 0, True, ["7"]], ids=repr)
def test_send__non_string_dedup_id_400_and_no_collision(api, queue, dedup_id):
    """A number is not the string it prints as: 7 would otherwise be a duplicate of "7" and dropped."""
    send(queue, dedup_id="7")
    response = post(api, qurl("jobs", "messages"), {"body": "second", "dedup_id": dedup_id})
    assert_refused(response, 400, 1, field="dedup_id")
    assert response.json()["dedup_id"] == ["Not a valid string."]


@pytest.mark.parametrize("path", ["ack", "extend", "release", "reject"])
@pytest.mark.parametrize("receipts", [{"receipt": 12345}, {"receipts": [12345]}, {"receipts": ["1.x", 1.5]}], ids=repr)
def test_receipts__non_string_400_and_nothing_changes(api, queue, path, receipts):
    send(queue)
    [leased] = lease(queue)
    payload = {**receipts, "visibility_timeout": 60} if path == "extend" else receipts
    response = post(api, qurl("jobs", path), payload)
    assert_refused(response, 400, 1, field="receipt" if "receipt" in receipts else "receipts")
    assert "Not a valid string." in str(response.json())
    message = Message.objects.get()
    assert (message.status, message.receipt) == ("leased", leased["receipt"])


@pytest.mark.parametrize("payload", [{"body": ""}, {}, {"attributes": {"a": "b"}}], ids=["blank", "empty", "no-body"])
def test_send__blank_or_missing_body_400(api, queue, payload):
    assert_refused(post(api, qurl("jobs", "messages"), payload), 400, 0, field="body")


MALFORMED_JSON = {
    "truncated": b'{"body": "x"',
    "single-quotes": b"{'body': 'x'}",
    "trailing-comma": b'{"body": "x",}',
    "two-documents": b'{"body": "x"} {"body": "y"}',
    "bare-word": b"body",
    "invalid-utf8": b'{"body": "\xff\xfe"}',
    "overlong-utf8": b'{"body": "\xc0\xaf"}',
    "encoded-surrogate": b'{"body": "\xed\xa0\x80"}',
    "utf8-bom": b'\xef\xbb\xbf{"body": "x"}',
    "unescaped-newline": b'{"body": "a\nb"}',
}


@pytest.mark.parametrize("raw", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_send__malformed_json_400(api, queue, raw):
    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 400, 0, code="parse_error")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"body": "x", "attributes": {"k": ' + "[" * 100_000 + "]" * 100_000 + "}}",
        '{"body": "x", "attributes": {"k": ' + "[" * 40 + "]" * 40 + "}}",
    ],
    ids=["arrays-100k", "objects-100k", "in-attributes-100k", "in-attributes-40"],
)
def test_send__deeply_nested_json_400(api, queue, raw):
    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 400, 0, code="parse_error")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json; charset=UTF-16LE",
        'application/json; charset="latin-1"',
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ],
)
def test_send__unsupported_media_type_415(api, queue, content_type):
    raw = '{"body": "x"}'.encode("utf-16") if "16" in content_type else b'{"body": "x"}'

    assert_refused(post_raw(api, qurl("jobs", "messages"), raw, content_type), 415, 0)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", 'application/json; charset="UTF-8"'])
def test_send__explicit_utf8_charset_201(api, queue, content_type):
    response = post_raw(api, qurl("jobs", "messages"), b'{"body": "x"}', content_type)

    assert response.status_code == 201


@pytest.mark.parametrize(
    "raw",
    [
        '{"body": "x", "attributes": {"n": NaN}}',
        '{"body": "x", "attributes": {"n": Infinity}}',
        '{"body": "x", "attributes": {"n": -Infinity}}',
        '{"body": "x", "attributes": {"n": 1e400}}',
        '{"body": "x", "attributes": {"n": -1e400}}',
        '{"body": NaN}',
        '{"body": "x", "delay_seconds": NaN}',
        '{"body": "x", "delay_seconds": 1e400}',
    ],
    ids=["nan", "inf", "-inf", "1e400", "-1e400", "nan-body", "nan-delay", "1e400-delay"],
)
def test_send__non_finite_numbers_400(api, queue, raw):
    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 400, 0)


def test_send__integer_with_too_many_digits_400(api, queue):
    raw = '{"body": "x", "attributes": {"n": ' + "9" * 5000 + "}}"

    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 400, 0)


@pytest.mark.parametrize(
    "attributes",
    [
        {f"a{i}": i for i in range(11)},
        {"bad name": "x"},
        {"": "x"},
        {"é": "x"},
        {"k" * 257: "x"},
        {"k": {"nested": 1}},
        {"k": [1, 2]},
        {"k": None},
        ["k", "v"],
        "k=v",
    ],
    ids=["11", "space", "empty-name", "non-ascii-name", "long-name", "dict-value", "list-value", "null", "list", "str"],
)
def test_send__invalid_attributes_400(api, queue, attributes):
    response = post(api, qurl("jobs", "messages"), {"body": "x", "attributes": attributes})

    assert_refused(response, 400, 0, field="attributes")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delay_seconds", -1),
        ("delay_seconds", 901),
        ("delay_seconds", "5"),
        ("delay_seconds", 1.5),
        ("delay_seconds", None),
        ("dedup_id", ""),
        ("dedup_id", "has space"),
        ("dedup_id", " padded "),
        ("dedup_id", "trailing\n"),
        ("dedup_id", "x" * 129),
        ("dedup_id", "é"),
        ("surprise", 1),
    ],
)
def test_send__invalid_field_400_names_it(api, queue, field, value):
    response = post(api, qurl("jobs", "messages"), {"body": "x", field: value})

    assert_refused(response, 400, 0, field=field)


@pytest.mark.parametrize("raw", [b"[]", b'[{"body": "x"}]', b'"x"', b"null", b"1"])
def test_send__non_object_request_400(api, queue, raw):
    assert_refused(post_raw(api, qurl("jobs", "messages"), raw), 400, 0)


def test_send__empty_request_400(api, queue):
    assert_refused(post_raw(api, qurl("jobs", "messages"), b""), 400, 0, field="body")


# --- receive ------------------------------------------------------------------------------


def test_receive__empty_queue_returns_empty_list(api, queue):
    response = post(api, qurl("jobs", "receive"))

    assert response.status_code == 200
    assert response.json() == {"messages": []}


def test_receive__max_messages_oldest_first_with_every_field(api, queue):
    now = timezone.now()
    ids = [send(queue, f"m{i}", now=now - dt.timedelta(seconds=10 - i), attributes={"i": i}) for i in range(5)]

    response = post(api, qurl("jobs", "receive"), {"max_messages": 3})

    assert response.status_code == 200
    messages = response.json()["messages"]
    assert [m["id"] for m in messages] == ids[:3]
    first = messages[0]
    assert set(first) == {"id", "body", "attributes", "receipt", "lease_expires_at", "receive_count", "sent_at"}
    assert (first["body"], first["attributes"], first["receive_count"]) == ("m0", {"i": 0}, 1)
    assert first["receipt"].startswith(f"{ids[0]}.")
    assert len({m["receipt"] for m in messages}) == 3
    assert Message.objects.filter(status="leased").count() == 3
    assert len(post(api, qurl("jobs", "receive"), {"max_messages": 10}).json()["messages"]) == 2


def test_receive__default_takes_one(api, queue):
    send(queue)
    send(queue)

    assert len(post(api, qurl("jobs", "receive")).json()["messages"]) == 1


def test_receive__visibility_timeout_sets_the_lease(api, queue):
    send(queue)
    send(queue)

    before = timezone.now()
    custom = post(api, qurl("jobs", "receive"), {"visibility_timeout": 600}).json()["messages"][0]
    default = post(api, qurl("jobs", "receive")).json()["messages"][0]

    custom_expiry = Message.objects.get(id=custom["id"]).lease_expires_at
    default_expiry = Message.objects.get(id=default["id"]).lease_expires_at
    assert 599 <= (custom_expiry - before).total_seconds() <= 605
    assert 29 <= (default_expiry - before).total_seconds() <= 35
    assert dt.datetime.fromisoformat(custom["lease_expires_at"].replace("Z", "+00:00")) == custom_expiry


def test_receive__consumer_label_and_user_stored(api, queue, user):
    send(queue)

    [received] = post(api, qurl("jobs", "receive"), {"consumer": "worker-7 (host a)"}).json()["messages"]

    message = Message.objects.get(id=received["id"])
    assert message.consumer == "worker-7 (host a)"
    assert message.leased_by == user
    assert message.receipt == received["receipt"]


def test_receive__leased_message_not_handed_out_again(api, queue):
    send(queue)

    assert len(post(api, qurl("jobs", "receive")).json()["messages"]) == 1
    assert post(api, qurl("jobs", "receive"), {"max_messages": 10}).json() == {"messages": []}


def test_receive__expired_lease_in_review_queue_not_redelivered(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    lease(queue, now=past)

    assert post(api, qurl("jobs", "receive")).json() == {"messages": []}


def test_receive__expired_lease_in_requeue_queue_redelivered_with_fresh_receipt(api, requeue_queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(requeue_queue, now=past)
    [first] = lease(requeue_queue, now=past)

    [again] = post(api, qurl("retry", "receive")).json()["messages"]

    assert again["id"] == first["id"]
    assert again["receipt"] != first["receipt"]
    assert again["receive_count"] == 2


def test_receive__delayed_message_arrives_during_long_poll(api, queue):
    # Due in ~0.4 s: sent 0.6 s ago with a 1 s delay.
    send(queue, "soon", now=timezone.now() - dt.timedelta(seconds=0.6), delay_seconds=1)

    started = time.monotonic()
    response = post(api, qurl("jobs", "receive"), {"wait_seconds": 10})
    elapsed = time.monotonic() - started

    assert [m["body"] for m in response.json()["messages"]] == ["soon"]
    assert elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_receive__long_poll_returns_early_when_a_message_arrives(api, queue):
    def produce():
        try:
            time.sleep(0.5)
            services.message_send(queue=queue, messages=[OutgoingMessage(body="arrived")])
        finally:
            connection.close()

    producer = threading.Thread(target=produce)
    started = time.monotonic()
    producer.start()
    try:
        response = post(api, qurl("jobs", "receive"), {"wait_seconds": 15, "consumer": "poller"})
    finally:
        producer.join()
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert [m["body"] for m in response.json()["messages"]] == ["arrived"]
    assert 0.4 <= elapsed < 8
    assert Message.objects.get().consumer == "poller"


@pytest.mark.django_db(transaction=True)
def test_receive__long_poll_two_waiting_consumers_never_share_a_message(queue, user):
    """Two long polls wait; two messages arrive; each consumer gets a different one."""
    results: dict[str, list] = {}

    def consume(label: str):
        try:
            client = api_client_for(user)
            response = post(client, qurl("jobs", "receive"), {"wait_seconds": 5, "consumer": label})
            results[label] = [m["id"] for m in response.json()["messages"]]
        finally:
            connection.close()

    consumers = [threading.Thread(target=consume, args=(label,)) for label in ("c1", "c2")]
    for thread in consumers:
        thread.start()
    time.sleep(0.3)
    services.message_send(queue=queue, messages=[OutgoingMessage(body="a"), OutgoingMessage(body="b")])
    for thread in consumers:
        thread.join()

    got = results["c1"] + results["c2"]
    assert len(got) == len(set(got)) == 2
    assert Message.objects.filter(status="leased").count() == 2


def test_receive__long_poll_returns_empty_after_the_wait(api, queue):
    started = time.monotonic()
    response = post(api, qurl("jobs", "receive"), {"wait_seconds": 1})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json() == {"messages": []}
    assert 1 <= elapsed < 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_messages", 0),
        ("max_messages", 101),
        ("max_messages", "1"),
        ("max_messages", 1.0),
        ("max_messages", True),
        ("max_messages", None),
        ("visibility_timeout", -1),
        ("visibility_timeout", 43201),
        ("visibility_timeout", "30"),
        ("wait_seconds", -1),
        ("wait_seconds", 21),
        ("wait_seconds", 0.5),
        ("consumer", 5),
        ("consumer", "c" * 201),
        ("consumer", "bad\u0001label"),
        ("consumer", None),
        ("max_mesages", 1),
    ],
)
def test_receive__invalid_400_names_field(api, queue, field, value):
    send(queue)
    before = snapshot()

    response = post(api, qurl("jobs", "receive"), {field: value})

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert snapshot() == before


def test_receive__nul_in_consumer_400(api, queue):
    send(queue)

    response = post_raw(api, qurl("jobs", "receive"), r'{"consumer": "a\u0000"}')

    assert response.status_code == 400
    assert Message.objects.get().status == "ready"


# --- ack, extend, release, reject ---------------------------------------------------------


def test_ack__batch_per_item_results(api, queue, user):
    send(queue)
    send(queue)
    first, second = lease(queue, n=2)
    other = QueueFactory(owner=user, name="other")
    send(other)
    [foreign] = lease(other)
    receipts = [first["receipt"], "999999.deadbeef", "garbage", second["receipt"], foreign["receipt"]]

    response = post(api, qurl("jobs", "ack"), {"receipts": receipts})

    assert response.status_code == 200
    assert [(r["receipt"], r["status"]) for r in response.json()["results"]] == [
        (first["receipt"], "acked"),
        ("999999.deadbeef", "not_found"),
        ("garbage", "not_found"),
        (second["receipt"], "acked"),
        (foreign["receipt"], "not_found"),
    ]
    assert set(Message.objects.filter(queue=queue).values_list("status", flat=True)) == {"acked"}
    assert Message.objects.get(queue=other).status == "leased"


def test_ack__single_receipt_200(api, queue):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]})

    assert response.status_code == 200
    assert response.json() == {"receipt": leased["receipt"], "status": "acked"}
    message = Message.objects.get()
    assert (message.status, message.acked_from) == ("acked", "leased")


def test_ack__single_unknown_receipt_404(api, queue):
    response = post(api, qurl("jobs", "ack"), {"receipt": "12345.abcdef"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_ack__single_stale_receipt_409(api, requeue_queue):
    send(requeue_queue)
    [first] = lease(requeue_queue, visibility_timeout=0)
    [second] = post(api, qurl("retry", "receive")).json()["messages"]

    response = post(api, qurl("retry", "ack"), {"receipt": first["receipt"]})

    assert response.status_code == 409
    assert response.json()["code"] == "stale"
    message = Message.objects.get()
    assert (message.status, message.receipt) == ("leased", second["receipt"])


def test_ack__stale_receipt_from_an_earlier_delivery_changes_nothing(api, requeue_queue):
    send(requeue_queue)
    [first] = lease(requeue_queue, visibility_timeout=0)
    post(api, qurl("retry", "receive"))
    before = snapshot()

    for action, extra in [("ack", {}), ("extend", {"visibility_timeout": 60}), ("release", {}), ("reject", {})]:
        response = post(api, qurl("retry", action), {"receipts": [first["receipt"]], **extra})
        assert response.status_code == 200
        assert response.json()["results"][0]["status"] == "stale", action

    assert snapshot() == before


def test_ack__receipt_from_another_queue_not_acked(api, queue, user):
    other = QueueFactory(owner=user, name="other")
    send(other)
    [leased] = lease(other)

    response = post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]})

    assert response.status_code == 404
    assert Message.objects.get().status == "leased"


@pytest.mark.parametrize("action", ["ack", "extend", "release", "reject"])
def test_lease_calls__a_receipt_built_from_another_of_its_batch_is_stale(api, queue, action):
    """Each message of a receive batch has a token of its own: one message's id with another's
    token names no delivery, and changes nothing."""
    send(queue, "a")
    send(queue, "b")
    first, second = lease(queue, 2)
    forged = f"{second['id']}.{first['receipt'].partition('.')[2]}"
    extra = {"visibility_timeout": 60} if action == "extend" else {}

    response = post(api, qurl("jobs", action), {"receipt": forged, **extra})

    assert response.status_code == 409, response.content
    assert "mistyped" in response.json()["detail"]
    assert Message.objects.get(id=second["id"]).status == "leased"
    assert Message.objects.get(id=second["id"]).lease_expires_at == second["lease_expires_at"]


def test_ack__repeated_answers_acked_again(api, queue):
    send(queue)
    [leased] = lease(queue)

    first = post(api, qurl("jobs", "ack"), {"receipts": [leased["receipt"]]})
    again = post(api, qurl("jobs", "ack"), {"receipts": [leased["receipt"]]})
    single = post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]})

    assert first.json() == again.json() == {"results": [{"receipt": leased["receipt"], "status": "acked"}]}
    assert single.status_code == 200
    assert single.json()["status"] == "acked"
    assert Message.objects.get().status == "acked"


def test_ack__same_receipt_twice_in_one_batch(api, queue):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "ack"), {"receipts": [leased["receipt"], leased["receipt"]]})

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["acked", "acked"]


def test_ack__expired_lease_is_acked_late(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    [leased] = lease(queue, now=past)

    response = post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]})

    assert response.status_code == 200
    assert response.json()["status"] == "acked_late"
    message = Message.objects.get()
    # In review by time (rule 2), so acked from there, with its decision, as if the sweep had run.
    assert (message.status, message.acked_from) == ("acked", "review")
    assert ReviewDecision.objects.get().action == "acked_late"


def test_ack__late_ack_of_swept_message_resolves_the_review_item(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    [leased] = lease(queue, now=past, consumer="slow-worker")
    services.leases_sweep()
    assert Message.objects.get().status == "review"

    response = post(api, qurl("jobs", "ack"), {"receipts": [leased["receipt"]]})

    assert response.json()["results"][0]["status"] == "acked_late"
    assert Message.objects.get().status == "acked"
    decision = ReviewDecision.objects.get()
    assert (decision.action, decision.actor) == ("acked_late", "slow-worker")
    assert api.get(qurl("jobs")).json()["review"] == 0
    assert api.get(qurl("jobs", "review")).json()["count"] == 0


MALFORMED_RECEIPTS = {
    "neither": {},
    "both": {"receipt": "1.a", "receipts": ["1.a"]},
    "empty-list": {"receipts": []},
    "over-limit": {"receipts": ["1.a"] * 101},
    "string-not-list": {"receipts": "1.a"},
    "dict-item": {"receipts": [{"r": 1}]},
    "null-item": {"receipts": [None]},
    "null": {"receipt": None},
    "blank": {"receipt": ""},
    "too-long": {"receipt": "r" * 65},
    "unknown-field": {"receipt": "1.a", "stray": 1},
}
# Every case on ack; the four receipt endpoints share ReceiptsIn, so the others get the main ones.
MALFORMED_RECEIPT_CASES = [("ack", name) for name in MALFORMED_RECEIPTS] + [
    (action, name)
    for action in ("extend", "release", "reject")
    for name in ("neither", "both", "empty-list", "over-limit", "unknown-field")
]


@pytest.mark.parametrize(
    ("action", "case"), MALFORMED_RECEIPT_CASES, ids=[f"{a}-{c}" for a, c in MALFORMED_RECEIPT_CASES]
)
def test_receipts__malformed_request_400(api, queue, action, case):
    send(queue)
    [leased] = lease(queue)
    # "1.a" stands for a real, live receipt: the request is refused for its shape alone.
    payload = json.loads(json.dumps(MALFORMED_RECEIPTS[case]).replace('"1.a"', json.dumps(leased["receipt"])))
    if action == "extend":
        payload.setdefault("visibility_timeout", 60)
    before = snapshot()

    response = post(api, qurl("jobs", action), payload)

    assert response.status_code == 400, response.content
    assert snapshot() == before


@pytest.mark.parametrize("action", ["ack", "extend"])
def test_receipts__non_ascii_digit_receipt_is_not_found(api, queue, action):
    payload = {"receipts": ["\u00b2.abc", "\u2460.x"]}
    if action == "extend":
        payload["visibility_timeout"] = 5
    response = post(api, qurl("jobs", action), payload)

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["not_found", "not_found"]


def test_extend__live_lease_extended(api, queue):
    send(queue)
    [leased] = lease(queue)
    before = timezone.now()

    response = post(api, qurl("jobs", "extend"), {"receipts": [leased["receipt"]], "visibility_timeout": 600})

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["status"] == "extended"
    expiry = Message.objects.get().lease_expires_at
    assert 599 <= (expiry - before).total_seconds() <= 605
    assert dt.datetime.fromisoformat(result["lease_expires_at"].replace("Z", "+00:00")) == expiry
    # The receipt stays valid after an extend.
    assert post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]}).json()["status"] == "acked"


def test_extend__single_form_200(api, queue):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "extend"), {"receipt": leased["receipt"], "visibility_timeout": 0})

    assert response.status_code == 200
    assert response.json()["status"] == "extended"


def test_extend__expired_lease_is_stale(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    [leased] = lease(queue, now=past)
    before = snapshot()

    batch = post(api, qurl("jobs", "extend"), {"receipts": [leased["receipt"]], "visibility_timeout": 600})
    single = post(api, qurl("jobs", "extend"), {"receipt": leased["receipt"], "visibility_timeout": 600})

    assert batch.json()["results"][0]["status"] == "stale"
    assert single.status_code == 409
    assert single.json()["code"] == "stale"
    assert snapshot() == before


@pytest.mark.parametrize("path", ["extend", "release", "reject"])
def test_lease_calls__an_acked_message_is_stale_not_acked(api, queue, path):
    """Extend, release and reject need a live lease: on an acked message they change nothing and say so."""
    send(queue)
    [leased] = lease(queue)
    assert post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]}).status_code == 200
    before = snapshot()
    extra = {"visibility_timeout": 60} if path == "extend" else {}

    single = post(api, qurl("jobs", path), {"receipt": leased["receipt"], **extra})
    batch = post(api, qurl("jobs", path), {"receipts": [leased["receipt"]], **extra})

    assert (single.status_code, single.json()) == (409, {"detail": "The message has been acked.", "code": "stale"})
    assert batch.json()["results"] == [
        {"receipt": leased["receipt"], "status": "stale", "detail": "The message has been acked."}
    ]
    assert snapshot() == before


@pytest.mark.parametrize("path", ["ack", "extend", "release", "reject"])
def test_lease_calls__a_stale_receipt_says_why(api, queue, path):
    send(queue)
    [leased] = lease(queue)
    message_id, token = leased["receipt"].split(".")
    extra = {"visibility_timeout": 60} if path == "extend" else {}

    mistyped = post(api, qurl("jobs", path), {"receipt": f"{message_id}.{token}x", **extra})
    assert post(api, qurl("jobs", "release"), {"receipt": leased["receipt"]}).status_code == 200
    released = post(api, qurl("jobs", path), {"receipt": leased["receipt"], **extra})

    assert mistyped.status_code == released.status_code == 409
    assert "mistyped" in mistyped.json()["detail"]
    assert released.json()["detail"] == "The message is ready, not leased."


@pytest.mark.parametrize("value", [None, -1, 43201, "60", 1.5], ids=["missing", "negative", "too-big", "str", "float"])
def test_extend__invalid_visibility_timeout_400(api, queue, value):
    send(queue)
    [leased] = lease(queue)
    payload = {"receipts": [leased["receipt"]]}
    if value is not None:
        payload["visibility_timeout"] = value
    before = snapshot()

    response = post(api, qurl("jobs", "extend"), payload)

    assert response.status_code == 400
    assert "visibility_timeout" in response.json()
    assert snapshot() == before


def test_release__back_to_ready_and_receipt_stops_working(api, queue):
    send(queue)
    [leased] = lease(queue, consumer="w")

    response = post(api, qurl("jobs", "release"), {"receipts": [leased["receipt"]]})

    assert response.json() == {"results": [{"receipt": leased["receipt"], "status": "released"}]}
    message = Message.objects.get()
    assert (message.status, message.receipt) == ("ready", None)
    assert Delivery.objects.get().outcome == "released"
    assert post(api, qurl("jobs", "ack"), {"receipt": leased["receipt"]}).status_code == 409
    [again] = post(api, qurl("jobs", "receive")).json()["messages"]
    assert (again["id"], again["receive_count"]) == (leased["id"], 2)


def test_release__with_delay_seconds(api, queue):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "release"), {"receipt": leased["receipt"], "delay_seconds": 120})

    assert response.status_code == 200
    assert response.json()["status"] == "released"
    assert post(api, qurl("jobs", "receive")).json() == {"messages": []}
    counts = api.get(qurl("jobs")).json()
    assert (counts["ready"], counts["delayed"], counts["leased"]) == (0, 1, 0)
    message = Message.objects.get()
    assert 115 <= (message.available_at - timezone.now()).total_seconds() <= 121


def test_release__expired_lease_is_stale(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    [leased] = lease(queue, now=past)

    response = post(api, qurl("jobs", "release"), {"receipt": leased["receipt"]})

    assert response.status_code == 409
    assert Message.objects.get().status == "leased"


@pytest.mark.parametrize("value", [-1, 901, "5", None])
def test_release__invalid_delay_seconds_400(api, queue, value):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "release"), {"receipts": [leased["receipt"]], "delay_seconds": value})

    assert response.status_code == 400
    assert "delay_seconds" in response.json()
    assert Message.objects.get().status == "leased"


def test_reject__with_reason_puts_message_in_review(api, queue):
    send(queue)
    [leased] = lease(queue, consumer="parser")

    response = post(api, qurl("jobs", "reject"), {"receipts": [leased["receipt"]], "reason": "cannot parse: line 3"})

    assert response.json() == {"results": [{"receipt": leased["receipt"], "status": "rejected"}]}
    message = Message.objects.get()
    assert (message.status, message.review_reason, message.review_note) == (
        "review",
        "rejected",
        "cannot parse: line 3",
    )
    delivery = Delivery.objects.get()
    assert (delivery.outcome, delivery.reason, delivery.consumer) == ("rejected", "cannot parse: line 3", "parser")
    assert api.get(qurl("jobs")).json()["review"] == 1
    [item] = api.get(qurl("jobs", "review")).json()["results"]
    assert (item["reason"], item["note"], item["consumer"]) == ("rejected", "cannot parse: line 3", "parser")


def test_reject__single_form_without_reason(api, queue):
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "reject"), {"receipt": leased["receipt"]})

    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert Message.objects.get().review_note == ""


def test_reject__expired_lease_is_stale(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    [leased] = lease(queue, now=past)

    response = post(api, qurl("jobs", "reject"), {"receipts": [leased["receipt"]], "reason": "x"})

    assert response.json()["results"][0]["status"] == "stale"
    message = Message.objects.get()
    assert (message.status, message.review_note) == ("leased", "")


@pytest.mark.parametrize(
    "raw",
    [r'"a\u0000"', r'"a\ud800"', r'"a\u0001"', r'"\ufffe"', "5", '"' + "r" * 1001 + '"'],
    ids=["nul", "surrogate", "control", "non-character", "number", "too-long"],
)
def test_reject__invalid_reason_400(api, queue, raw):
    send(queue)
    [leased] = lease(queue)

    response = post_raw(api, qurl("jobs", "reject"), f'{{"receipt": "{leased["receipt"]}", "reason": {raw}}}')

    assert response.status_code == 400
    assert Message.objects.get().status == "leased"


# --- review -------------------------------------------------------------------------------


def test_review_list__newest_first_paginated(api, queue):
    now = timezone.now()
    ids = [to_review(queue, f"p{i}", now=now - dt.timedelta(seconds=100 - i)) for i in range(3)]

    first = api.get(qurl("jobs", "review"), {"page_size": 2})
    second = api.get(qurl("jobs", "review"), {"page_size": 2, "page": 2})

    assert first.status_code == second.status_code == 200
    assert first.json()["count"] == 3
    assert [item["id"] for item in first.json()["results"]] == [ids[2], ids[1]]
    assert first.json()["next"] and first.json()["previous"] is None
    assert [item["id"] for item in second.json()["results"]] == [ids[0]]
    assert api.get(qurl("jobs", "review"), {"page": 3}).status_code == 404


def test_review_list__item_shows_history(api, queue, user):
    past = timezone.now() - dt.timedelta(seconds=120)
    message_id = send(queue, "doomed", now=past, attributes={"k": "v"})
    lease(queue, now=past, consumer="w1", user=user, visibility_timeout=10)
    services.leases_sweep()

    [item] = api.get(qurl("jobs", "review")).json()["results"]

    assert item["id"] == message_id
    assert (item["body"], item["attributes"], item["reason"]) == ("doomed", {"k": "v"}, "timeout")
    assert (item["consumer"], item["leased_by"], item["receive_count"]) == ("w1", user.username, 1)
    assert item["leased_at"] and item["timed_out_at"] and item["sent_at"]
    [delivery] = item["deliveries"]
    assert (delivery["attempt"], delivery["consumer"], delivery["outcome"]) == (1, "w1", "expired")
    assert delivery["leased_by"] == user.username


def test_review_list__only_this_queue_and_only_review(api, queue, user):
    other = QueueFactory(owner=user, name="other")
    to_review(other)
    send(queue)
    lease(queue)
    mine = to_review(queue)

    response = api.get(qurl("jobs", "review"))

    assert [item["id"] for item in response.json()["results"]] == [mine]


def test_review__a_lease_run_out_before_the_sweep_is_listed_and_decided(api, queue, user):
    """Expiry is decided by time (rule 2): the review list and its actions do not wait for the sweep."""
    past = timezone.now() - dt.timedelta(seconds=120)
    listed, requeued, discarded, live = (send(queue, body, now=past) for body in ("a", "b", "c", "d"))
    lease(queue, n=3, now=past, consumer="slow", visibility_timeout=10)
    lease(queue, consumer="busy")
    assert api.get(qurl("jobs")).json()["review"] == 3

    items = api.get(qurl("jobs", "review")).json()["results"]
    assert sorted(item["id"] for item in items) == [listed, requeued, discarded]
    assert {(item["consumer"], item["reason"]) for item in items} == {("slow", "timeout")}
    assert Message.objects.get(id=live).status == "leased"
    Message.objects.filter(id__in=[requeued, discarded]).update(status="leased")  # as if just now run out, unswept
    requeue = post(api, qurl("jobs", "review/requeue"), {"ids": [requeued, live]}).json()["results"]
    discard = post(api, qurl("jobs", "review/discard"), {"ids": [discarded]}).json()["results"]
    assert [r["status"] for r in requeue + discard] == ["requeued", "not_found", "discarded"]
    assert Message.objects.get(id=requeued).status == "ready"
    assert not Message.objects.filter(id=discarded).exists()
    assert Message.objects.get(id=live).status == "leased"
    assert [d["outcome"] for d in api.get(qurl("jobs", "review")).json()["results"][0]["deliveries"]] == ["expired"]


def test_review_list__filter_by_reason(api, queue):
    past = timezone.now() - dt.timedelta(seconds=60)
    send(queue, now=past)
    lease(queue, now=past)
    services.leases_sweep()
    rejected = to_review(queue)

    by_rejected = api.get(qurl("jobs", "review"), {"reason": "rejected"})
    by_timeout = api.get(qurl("jobs", "review"), {"reason": "timeout"})
    by_max = api.get(qurl("jobs", "review"), {"reason": "max_receives"})

    assert by_rejected.status_code == 200, by_rejected.content[:300]
    assert [item["id"] for item in by_rejected.json()["results"]] == [rejected]
    assert [item["reason"] for item in by_timeout.json()["results"]] == ["timeout"]
    assert by_max.json()["count"] == 0


def test_review_list__filter_by_consumer(api, queue):
    a = to_review(queue, consumer="worker-a")
    to_review(queue, consumer="worker-b")

    response = api.get(qurl("jobs", "review"), {"consumer": "worker-a"})

    assert [item["id"] for item in response.json()["results"]] == [a]
    assert api.get(qurl("jobs", "review"), {"consumer": "nobody"}).json()["count"] == 0


@pytest.mark.parametrize(
    "query",
    ["reason=bogus", "reason=REJECTED", "consumer=" + "c" * 201, "consumer=a%00b"],
    ids=["bad-reason", "wrong-case", "long-consumer", "nul-consumer"],
)
def test_review_list__invalid_filter_400(api, queue, query):
    to_review(queue)

    response = api.get(qurl("jobs", "review") + "?" + query)

    assert response.status_code == 400, response.content[:300]
    assert set(response.json()) & {"reason", "consumer"}


def test_review_requeue__per_id_results(api, queue, user):
    in_review = to_review(queue)
    ready = send(queue)
    other = QueueFactory(owner=user, name="other")
    foreign = to_review(other)

    response = post(
        api, qurl("jobs", "review/requeue"), {"ids": [in_review, ready, foreign, 999_999, in_review], "note": "fixed"}
    )

    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"id": in_review, "status": "requeued"},
            {"id": ready, "status": "not_found"},
            {"id": foreign, "status": "not_found"},
            {"id": 999_999, "status": "not_found"},
        ]
    }
    assert Message.objects.get(id=in_review).status == "ready"
    assert Message.objects.get(id=foreign).status == "review"
    decision = ReviewDecision.objects.get()
    assert (decision.message_id, decision.action, decision.operator, decision.note) == (
        in_review,
        "requeued",
        user,
        "fixed",
    )
    received = post(api, qurl("jobs", "receive"), {"max_messages": 10}).json()["messages"]
    assert {m["id"] for m in received} == {in_review, ready}


def test_review_requeue__with_delay(api, queue):
    message_id = to_review(queue)

    response = post(api, qurl("jobs", "review/requeue"), {"ids": [message_id], "delay_seconds": 300})

    assert response.json()["results"] == [{"id": message_id, "status": "requeued"}]
    counts = api.get(qurl("jobs")).json()
    assert (counts["delayed"], counts["review"]) == (1, 0)
    assert post(api, qurl("jobs", "receive")).json() == {"messages": []}


def test_review_requeue__twice_is_not_found_the_second_time(api, queue):
    message_id = to_review(queue)

    post(api, qurl("jobs", "review/requeue"), {"ids": [message_id]})
    again = post(api, qurl("jobs", "review/requeue"), {"ids": [message_id]})

    assert again.json()["results"] == [{"id": message_id, "status": "not_found"}]
    assert ReviewDecision.objects.count() == 1


def test_review_discard__per_id_results_and_decision_kept(api, queue, user):
    in_review = to_review(queue)
    send(queue)
    [leased] = lease(queue)

    response = post(api, qurl("jobs", "review/discard"), {"ids": [in_review, leased["id"]]})

    assert response.json() == {
        "results": [{"id": in_review, "status": "discarded"}, {"id": leased["id"], "status": "not_found"}]
    }
    assert not Message.objects.filter(id=in_review).exists()
    assert Message.objects.get(id=leased["id"]).status == "leased"
    decision = ReviewDecision.objects.get()
    assert (decision.message_id, decision.action, decision.operator) == (in_review, "discarded", user)
    assert api.get(qurl("jobs", "review")).json()["count"] == 0


@pytest.mark.parametrize("action", ["review/requeue", "review/discard"])
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"ids": []},
        {"ids": [0]},
        {"ids": [-1]},
        {"ids": ["1"]},
        {"ids": [True]},
        {"ids": [1.0]},
        {"ids": [2**63]},
        {"ids": [10**30]},
        {"ids": list(range(1, 102))},
        {"ids": 1},
        {"ids": [1], "stray": True},
        {"ids": [1], "note": 5},
    ],
    ids=[
        "missing",
        "empty",
        "zero",
        "negative",
        "str",
        "bool",
        "float",
        "2**63",
        "10**30",
        "over-limit",
        "not-a-list",
        "unknown-field",
        "bad-note",
    ],
)
def test_review_ids__invalid_400(api, queue, action, payload):
    to_review(queue)
    before = snapshot()

    response = post(api, qurl("jobs", action), payload)

    assert response.status_code == 400, response.content[:300]
    assert snapshot() == before


@pytest.mark.parametrize("value", [-1, 901, "5"])
def test_review_requeue__invalid_delay_400(api, queue, value):
    message_id = to_review(queue)

    response = post(api, qurl("jobs", "review/requeue"), {"ids": [message_id], "delay_seconds": value})

    assert response.status_code == 400
    assert "delay_seconds" in response.json()
    assert Message.objects.get().status == "review"


# --- health, schema, docs -----------------------------------------------------------------


def test_health__200_without_a_token(db, client):
    response = client.get(f"{API}/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_schema__valid_openapi_3_json(db, client):
    response = client.get(f"{API}/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "WonderQ API"
    paths = schema["paths"]
    for path in [
        "/api/v1/queues/",
        "/api/v1/queues/{name}/",
        "/api/v1/queues/{name}/messages/",
        "/api/v1/queues/{name}/receive/",
        "/api/v1/queues/{name}/ack/",
        "/api/v1/queues/{name}/extend/",
        "/api/v1/queues/{name}/release/",
        "/api/v1/queues/{name}/reject/",
        "/api/v1/queues/{name}/purge/",
        "/api/v1/queues/{name}/review/",
        "/api/v1/queues/{name}/review/requeue/",
        "/api/v1/queues/{name}/review/discard/",
        "/api/v1/health/",
    ]:
        assert path in paths, path
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_schema__json_by_format_parameter(db, client):
    response = client.get(f"{API}/schema/?format=json")

    assert response.status_code == 200
    assert json.loads(response.content)["openapi"].startswith("3.")


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("post", "schema/", 405),
        ("delete", "schema/", 405),
        ("get", "schema/?format=xml", 404),
        ("post", "docs/", 405),
        ("get", "docs/?format=xml", 404),
    ],
)
def test_schema_and_docs__errors_are_json_like_the_rest_of_the_api(db, client, method, path, code):
    """Their pages are YAML and HTML; an error is the API's `{detail, code}` in JSON all the same."""
    response = getattr(client, method)(f"{API}/{path}")

    assert response.status_code == code
    assert response["Content-Type"] == "application/json"
    assert set(json.loads(response.content)) == {"detail", "code"}


def _openapi() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _component(schema: dict, ref: dict) -> dict:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def test_schema__review_list_documents_the_page_it_answers(api, queue):
    """Found by the fuzzer: the list is paginated, but the schema said a plain array."""
    to_review(queue)
    schema = _openapi()
    operation = schema["paths"]["/api/v1/queues/{name}/review/"]["get"]
    page = _component(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])

    body = api.get(qurl("jobs", "review"), {"page_size": 1}).json()

    assert page["type"] == "object"
    assert set(body) == set(page["properties"]) == {"count", "next", "previous", "results"}
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/ReviewItemOut"}
    assert len(body["results"]) == body["count"] == 1
    query = sorted(p["name"] for p in operation["parameters"] if p["in"] == "query")
    assert query == ["consumer", "page", "page_size", "reason"]


@pytest.mark.parametrize("action", ["ack", "extend", "release", "reject"])
def test_schema__single_receipt_answer_is_documented(api, queue, action):
    """Found by the fuzzer: `{receipt}` answers its result alone, `{receipts}` a list of results."""
    send(queue)
    [leased] = lease(queue)
    payload = {"receipt": leased["receipt"], **({"visibility_timeout": 5} if action == "extend" else {})}
    schema = _openapi()
    ok = schema["paths"][f"/api/v1/queues/{{name}}/{action}/"]["post"]["responses"]["200"]

    body = post(api, qurl("jobs", action), payload).json()

    one_of = ok["content"]["application/json"]["schema"]["oneOf"]
    batch, single = (_component(schema, ref) for ref in one_of)
    assert batch["required"] == ["results"]
    assert set(single["required"]) <= set(body) <= set(single["properties"])


def test_schema__input_limits_follow_settings(db, settings):
    """What the serializers refuse in code is in the schema too, so generated requests can be valid."""
    settings.WONDERQ_MAX_BATCH = 7
    settings.WONDERQ_MAX_WAIT_SECONDS = 3
    schema = _openapi()
    components = schema["components"]["schemas"]
    send_body = schema["paths"]["/api/v1/queues/{name}/messages/"]["post"]["requestBody"]["content"]

    assert [_component(schema, ref) for ref in send_body["application/json"]["schema"]["oneOf"]] == [
        components["MessageInRequest"],
        components["SendBatchInRequest"],
    ]
    assert components["SendBatchInRequest"]["properties"]["messages"]["maxItems"] == 7
    assert (
        components["ReceiptsInRequest"]["properties"]["receipts"] | {"maxItems": 7, "minItems": 1}
        == (components["ReceiptsInRequest"]["properties"]["receipts"])
    )
    assert components["ReceiptsInRequest"]["oneOf"] == [{"required": ["receipt"]}, {"required": ["receipts"]}]
    assert components["ReceiveInRequest"]["properties"]["wait_seconds"]["maximum"] == 3
    assert all(
        component["additionalProperties"] is False
        for name, component in components.items()
        if name.endswith("Request") and "properties" in component
    )


def test_schema__http_server_limits_documented_on_every_operation(db):
    """Found by the fuzzer: gunicorn answers an over-long request line with its own 414 HTML page."""
    for path, operations in _openapi()["paths"].items():
        for method, operation in operations.items():
            for status_code in ("414", "431"):
                assert list(operation["responses"][status_code]["content"]) == ["text/html"], (method, path)


@pytest.mark.parametrize("path", [f"{API}/nope/", f"{API}/queues/jobs/nope/", f"{API}/queues/jobs/review/x/"])
def test_api_errors__unknown_path_404_json(api, queue, path):
    """Found by the fuzzer: a path no route matches answered Django's HTML page."""
    response = api.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_api_errors__outside_the_api_django_pages_stay_html(db, client):
    response = client.get("/nope/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_api_errors__too_many_query_fields_400_json(api, queue):
    """Django refuses the query string itself (SuspiciousOperation): still the API's JSON shape."""
    query = "&".join(f"f{i}=1" for i in range(1001))

    response = api.get(f"{qurl('jobs', 'review')}?{query}")

    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request.", "code": "bad_request"}


def test_api_errors__server_error_500_json_under_api_html_elsewhere(rf):
    response = errors.server_error(rf.get(f"{API}/queues/"))
    elsewhere = errors.server_error(rf.get("/admin/"))

    assert response.status_code == elsewhere.status_code == 500
    assert json.loads(response.content) == {"detail": "Internal server error.", "code": "server_error"}
    assert elsewhere["Content-Type"].startswith("text/html")


def test_docs__page_200(db, client):
    response = client.get(f"{API}/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/v1/schema/" in response.content


@pytest.mark.parametrize("path", ["docs", "schema", "health"])
def test_docs_schema_health__every_method_answers_4xx_or_2xx(db, client, path):
    for method in ("get", "head", "options", "post", "put", "patch", "delete"):
        response = getattr(client, method)(f"{API}/{path}/")
        assert response.status_code < 500, (method, response.status_code)


def test_docs__options_names_the_methods(db, client):
    response = client.options(f"{API}/docs/")
    assert (response.status_code, response["Allow"]) == (200, "GET, HEAD, OPTIONS")


# --- authentication -----------------------------------------------------------------------

QUEUE_ENDPOINTS = [
    ("get", "/api/v1/queues/"),
    ("post", "/api/v1/queues/"),
    ("get", "/api/v1/queues/jobs/"),
    ("patch", "/api/v1/queues/jobs/"),
    ("delete", "/api/v1/queues/jobs/"),
    ("post", "/api/v1/queues/jobs/messages/"),
    ("post", "/api/v1/queues/jobs/receive/"),
    ("post", "/api/v1/queues/jobs/ack/"),
    ("post", "/api/v1/queues/jobs/purge/"),
    ("get", "/api/v1/queues/jobs/review/"),
    ("post", "/api/v1/queues/jobs/review/requeue/"),
]


@pytest.mark.parametrize(("method", "path"), QUEUE_ENDPOINTS)
def test_auth__no_token_401(client, queue, method, path):
    send(queue)
    before = snapshot()

    response = getattr(client, method)(path, {"body": "x", "name": "new"}, content_type="application/json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "not_authenticated"
    assert snapshot() == before


@pytest.mark.parametrize(
    "header",
    [
        "Token wq_not-a-real-key",
        "Token ",
        "Token",
        "Token a b",
        "Token " + "x" * 5000,
        "Token \u00e9\u00e9",
        "Bearer wq_whatever",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["unknown", "empty", "bare-keyword", "three-parts", "huge", "non-ascii", "bearer", "basic"],
)
def test_auth__bad_token_401(queue, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = post(client, qurl("jobs", "messages"), {"body": "x"})

    assert response.status_code == 401
    assert not Message.objects.exists()


def test_auth__revoked_token_401(user, queue):
    token, key = services.token_create(user=user, name="worker")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(qurl("jobs")).status_code == 200

    assert services.token_revoke(token=token)

    response = client.get(qurl("jobs"))
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert post(client, qurl("jobs", "messages"), {"body": "x"}).status_code == 401
    assert not Message.objects.exists()


def test_auth__expired_token_401(user, queue):
    _, key = services.token_create(user=user, name="old", expires_at=timezone.now() - dt.timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert client.get(qurl("jobs")).status_code == 401


def test_auth__inactive_user_401(queue):
    inactive = UserFactory(is_active=False)
    _, key = services.token_create(user=inactive, name="t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert client.get(f"{API}/queues/").status_code == 401


def test_auth__keyword_is_case_insensitive(user, queue):
    _, key = services.token_create(user=user, name="t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"token {key}")

    assert client.get(qurl("jobs")).status_code == 200
    assert ApiToken.objects.filter(user=user).count() == 1


# --- access -------------------------------------------------------------------------------


@pytest.fixture
def busy_queue(queue, user):
    """User A's queue "jobs" with a ready, a leased and a review message; returns the handles to attack."""
    send(queue, "ready", dedup_id="d1")
    send(queue, "to-lease", now=timezone.now() - dt.timedelta(seconds=5))
    [leased] = lease(queue, consumer="a-worker", user=user)
    review_id = to_review(queue, "poison", consumer="a-worker")
    return {"receipt": leased["receipt"], "leased_id": leased["id"], "review_id": review_id}


# (method, action, payload built from busy_queue's handles)
QUEUE_SCOPED = [
    ("get", "", None),
    ("patch", "", lambda h: {"visibility_timeout": 1}),
    ("delete", "", None),
    ("post", "messages", lambda h: {"body": "intruder", "dedup_id": "d1"}),
    ("post", "messages", lambda h: {"messages": [{"body": "intruder"}]}),
    ("post", "receive", lambda h: {"max_messages": 10}),
    ("post", "ack", lambda h: {"receipts": [h["receipt"]]}),
    ("post", "ack", lambda h: {"receipt": h["receipt"]}),
    ("post", "extend", lambda h: {"receipts": [h["receipt"]], "visibility_timeout": 1}),
    ("post", "release", lambda h: {"receipts": [h["receipt"]]}),
    ("post", "reject", lambda h: {"receipts": [h["receipt"]], "reason": "x"}),
    ("post", "purge", None),
    ("get", "review", None),
    ("post", "review/requeue", lambda h: {"ids": [h["review_id"]]}),
    ("post", "review/discard", lambda h: {"ids": [h["review_id"]]}),
]
QUEUE_SCOPED_IDS = [f"{method}-{action or 'queue'}-{i}" for i, (method, action, _) in enumerate(QUEUE_SCOPED)]


def _call(client, method: str, name: str, action: str, payload):
    path = qurl(name, action)
    if method in ("get", "delete"):
        return getattr(client, method)(path)
    return getattr(client, method)(path, payload, format="json")


@pytest.mark.parametrize(("method", "action", "payload"), QUEUE_SCOPED, ids=QUEUE_SCOPED_IDS)
def test_access__other_user_gets_404_everywhere_and_changes_nothing(
    other_api, api, busy_queue, method, action, payload
):
    body = payload(busy_queue) if payload else None
    before = snapshot()

    response = _call(other_api, method, "jobs", action, body)
    missing = _call(other_api, method, "no-such-queue", action, body)

    assert response.status_code == 404, response.content[:300]
    # Indistinguishable from a queue that does not exist.
    assert response.json() == missing.json() == {"detail": "Queue not found.", "code": "not_found"}
    assert snapshot() == before
    # A's receipt still works for A.
    assert post(api, qurl("jobs", "ack"), {"receipt": busy_queue["receipt"]}).json()["status"] == "acked"


@pytest.mark.parametrize(
    "raw",
    [b'{"body": "x"', b"[" * 10_000, b'{"body": "\\u0000"}', b"x" * (MAX_REQUEST_BYTES + 1)],
    ids=["malformed", "deep", "nul", "too-large"],
)
def test_access__other_user_gets_404_before_the_body_is_judged(other_api, busy_queue, raw):
    before = snapshot()

    response = post_raw(other_api, qurl("jobs", "messages"), raw)

    assert response.status_code == 404
    assert snapshot() == before


def test_access__other_user_does_not_list_the_queue(other_api, queue):
    response = other_api.get(f"{API}/queues/")

    assert response.status_code == 200
    assert response.json() == []


# Everything but reading the queue and sending to it.
SEND_ONLY_FORBIDDEN = [
    (row, row_id)
    for row, row_id in zip(QUEUE_SCOPED, QUEUE_SCOPED_IDS, strict=True)
    if row[1] != "messages" and row[:2] != ("get", "")
]


@pytest.mark.parametrize(
    ("method", "action", "payload"), [row for row, _ in SEND_ONLY_FORBIDDEN], ids=[i for _, i in SEND_ONLY_FORBIDDEN]
)
def test_access__send_only_grant_403(other_user, other_api, busy_queue, queue, method, action, payload):
    QueueGrantFactory(queue=queue, user=other_user, send_only=True)
    body = payload(busy_queue) if payload else None
    before = snapshot()

    response = _call(other_api, method, "jobs", action, body)

    assert response.status_code == 403, response.content[:300]
    assert response.json()["code"] == "permission_denied"
    assert snapshot() == before


def test_access__send_only_grant_may_send_and_see(other_user, other_api, queue):
    QueueGrantFactory(queue=queue, user=other_user, send_only=True)

    assert post(other_api, qurl("jobs", "messages"), {"body": "from b"}).status_code == 201
    assert other_api.get(qurl("jobs")).json()["ready"] == 1
    assert [q["name"] for q in other_api.get(f"{API}/queues/").json()] == ["jobs"]


@pytest.mark.parametrize(
    ("method", "action", "payload"),
    [
        ("post", "messages", lambda h: {"body": "x"}),
        ("post", "purge", None),
        ("patch", "", lambda h: {"visibility_timeout": 1}),
        ("delete", "", None),
        ("get", "review", None),
        ("post", "review/discard", lambda h: {"ids": [h["review_id"]]}),
    ],
)
def test_access__receive_only_grant_403(other_user, other_api, busy_queue, queue, method, action, payload):
    QueueGrantFactory(queue=queue, user=other_user, receive_only=True)
    before = snapshot()

    response = _call(other_api, method, "jobs", action, payload(busy_queue) if payload else None)

    assert response.status_code == 403
    assert snapshot() == before


def test_access__receive_only_grant_may_consume(other_user, other_api, busy_queue, queue):
    QueueGrantFactory(queue=queue, user=other_user, receive_only=True)

    [received] = post(other_api, qurl("jobs", "receive")).json()["messages"]
    assert post(other_api, qurl("jobs", "ack"), {"receipt": received["receipt"]}).json()["status"] == "acked"
    assert post(other_api, qurl("jobs", "ack"), {"receipt": busy_queue["receipt"]}).json()["status"] == "acked"
    assert Message.objects.get(id=received["id"]).leased_by == other_user


def _walk_every_endpoint(client, operator) -> None:
    """Use every queue-scoped endpoint of 'jobs' once, asserting success."""
    assert client.get(qurl("jobs")).status_code == 200
    assert client.patch(qurl("jobs"), {"visibility_timeout": 45}, format="json").status_code == 200
    sent = post(client, qurl("jobs", "messages"), {"messages": [{"body": str(i)} for i in range(5)]})
    assert sent.status_code == 201
    received = post(client, qurl("jobs", "receive"), {"max_messages": 4}).json()["messages"]
    assert len(received) == 4
    receipts = [m["receipt"] for m in received]
    assert post(client, qurl("jobs", "ack"), {"receipt": receipts[0]}).status_code == 200
    extend = post(client, qurl("jobs", "extend"), {"receipts": [receipts[1]], "visibility_timeout": 60})
    assert extend.json()["results"][0]["status"] == "extended"
    assert post(client, qurl("jobs", "release"), {"receipt": receipts[1]}).json()["status"] == "released"
    assert post(client, qurl("jobs", "reject"), {"receipt": receipts[2]}).json()["status"] == "rejected"
    assert post(client, qurl("jobs", "reject"), {"receipt": receipts[3]}).json()["status"] == "rejected"
    review = client.get(qurl("jobs", "review"))
    assert review.status_code == 200
    review_ids = [item["id"] for item in review.json()["results"]]
    assert len(review_ids) >= 2
    requeued = post(client, qurl("jobs", "review/requeue"), {"ids": [review_ids[0]]})
    assert requeued.json()["results"][0]["status"] == "requeued"
    discarded = post(client, qurl("jobs", "review/discard"), {"ids": [review_ids[1]]})
    assert discarded.json()["results"][0]["status"] == "discarded"
    assert ReviewDecision.objects.filter(operator=operator).count() == 2
    assert post(client, qurl("jobs", "purge")).json()["purged"] >= 2
    assert client.delete(qurl("jobs")).status_code == 204
    assert not Queue.objects.filter(name="jobs").exists()


def test_access__staff_can_do_everything(staff_user, busy_queue):
    _walk_every_endpoint(api_client_for(staff_user), staff_user)


def test_access__manager_grant_can_do_everything(other_user, other_api, busy_queue, queue):
    QueueGrantFactory(queue=queue, user=other_user, manager=True)

    _walk_every_endpoint(other_api, other_user)


def test_access__owner_can_do_everything(api, user, busy_queue):
    _walk_every_endpoint(api, user)
