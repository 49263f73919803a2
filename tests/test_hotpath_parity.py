"""The hot-path middleware answers plain send/receive/ack calls exactly as DRF would, and nothing else.

Each scenario runs twice on fresh data: once as deployed, once with the middleware taken
out of MIDDLEWARE (so DRF answers everything). Status codes, headers and bodies must be
the same, with ids, receipts and timestamps compared by position.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from queues.api import hotpath
from queues.api.views import QueueViewSet
from queues.models import Message
from tests.conftest import api_client_for
from tests.factories import QueueFactory, UserFactory

HOT = "queues.api.hotpath.HotPathMiddleware"


@pytest.fixture
def drf_calls(monkeypatch):
    """How many requests reached DRF's viewset (the real dispatch still runs)."""
    calls = []
    dispatch = QueueViewSet.dispatch

    def counting(self, request, *args, **kwargs):
        calls.append(request.path)
        return dispatch(self, request, *args, **kwargs)

    monkeypatch.setattr(QueueViewSet, "dispatch", counting)
    return calls


def _without_hot_path(settings):
    settings.MIDDLEWARE = [m for m in django_settings.MIDDLEWARE if m != HOT]


_VOLATILE = re.compile(r'("(?:id|receipt|sent_at|lease_expires_at)":)("[^"]*"|\d+)|(\[)(\d+(?:,\d+)*)(\])')


def _shape(response) -> tuple:
    """Status, headers and body with the values that differ from run to run numbered by first appearance."""
    seen: dict[str, int] = {}

    def number(match):
        if match.group(1):
            value = match.group(2)
            return f"{match.group(1)}#{seen.setdefault(value, len(seen))}"
        ids = ",".join(f"#{seen.setdefault(v, len(seen))}" for v in match.group(4).split(","))
        return f"[{ids}]"

    body = _VOLATILE.sub(number, response.content.decode())
    headers = {name: value for name, value in response.headers.items() if name != "Content-Length"}
    return response.status_code, headers, body


def _scenario(api, queue_name: str) -> list[tuple]:
    base = f"/api/v1/queues/{queue_name}"
    answers = []

    def post(path, body):
        response = api.post(f"{base}/{path}/", body, format="json")
        answers.append(_shape(response))
        return response

    # Text the renderer must escape or keep: non-ASCII, U+2028/2029, quotes, an escaped NUL is refused.
    post("messages", {"body": 'héllo \u2028 \u2029 "quoted" 日本', "attributes": {"n": 1.5, "b": True, "s": "x"}})
    post("messages", {"messages": [{"body": f"m{i}", "delay_seconds": 0} for i in range(3)]})
    post("messages", {"body": "dedup", "dedup_id": "d-1"})  # goes through the dedup transaction
    post("messages", {"body": "dedup again", "dedup_id": "d-1"})
    received = post("receive", {"max_messages": 3, "consumer": "worker-1", "visibility_timeout": 60}).json()
    receipts = [m["receipt"] for m in received["messages"]]
    post("ack", {"receipt": receipts[0]})
    post("ack", {"receipt": receipts[0]})  # again: the same answer
    post("ack", {"receipts": [*receipts[1:], "999999998.deadbeef", "not-a-receipt"]})
    post("ack", {"receipt": "99999999.0123456789abcdef"})  # 404 from a single unknown receipt
    post("receive", {})
    post("receive", {"max_messages": 10, "wait_seconds": 0})
    # Not plain: each of these is answered by the normal stack on both runs.
    post("messages", {"body": ""})
    post("messages", {"messages": []})
    post("receive", {"max_messages": 0})
    post("ack", {"receipts": "nope"})
    response = api.post(f"{base}/messages/", b'{"body": "x"', content_type="application/json")
    answers.append(_shape(response))
    response = api.post(f"{base}/messages/", b'{"body": "\\u0000"}', content_type="application/json")
    answers.append(_shape(response))
    response = api.post(f"{base}/receive/", {}, format="json", HTTP_ACCEPT="application/json; indent=4")
    answers.append(_shape(response))
    answers.append(_shape(api.post("/api/v1/queues/no-such-queue/messages/", {"body": "x"}, format="json")))
    return answers


@pytest.mark.django_db
def test_hotpath__answers_as_drf_does(settings, drf_calls):
    owner = UserFactory()
    QueueFactory(owner=owner, name="fast")
    fast = _scenario(api_client_for(owner), "fast")
    taken_by_drf = len(drf_calls)

    _without_hot_path(settings)
    owner = UserFactory()
    QueueFactory(owner=owner, name="slow")
    slow = _scenario(api_client_for(owner), "slow")

    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert a == b, f"answer {i} differs:\nhot path: {a}\nDRF:      {b}"
    # Of the 11 plain calls only the first reached DRF (it cached the token); all 8 others did.
    plain_first, others = "messages", ["messages", "messages", "receive", "ack", "messages", "messages", "receive"]
    expected = [f"/api/v1/queues/fast/{call}/" for call in [plain_first, *others]]
    assert drf_calls[:taken_by_drf] == [*expected, "/api/v1/queues/no-such-queue/messages/"]
    assert len(drf_calls) == taken_by_drf + len(slow)


@pytest.mark.django_db
def test_hotpath__renders_bodies_as_drf_json_renderer(db):
    bodies = [
        {"messages": [{"id": 1, "body": "a\u2028b\u2029c", "attributes": {"x": 1e-7, "y": -0.0, "z": None}}]},
        {"detail": "No message has this receipt.", "code": "not_found"},
        {"ids": [], "messages": []},
        {"results": [{"receipt": "é", "status": "acked"}]},
    ]
    renderer = JSONRenderer()
    context = {"view": APIView(), "request": None, "response": None}
    for body in bodies:
        assert hotpath._response(200, body).content == renderer.render(body, "application/json", context)


@pytest.mark.django_db
def test_hotpath__a_request_it_passes_on_is_counted_once(settings, user, queue, rate_windows_held):
    """The hot path counts the request against the token's budget; DRF's throttle must not count it again."""
    settings.WONDERQ_RATE_PER_TOKEN = "4/m"
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    assert api.post(f"{base}/receive/", {}, format="json").status_code == 200  # caches the token
    # Invalid bodies: counted by the hot path, answered (400) by DRF.
    assert [api.post(f"{base}/messages/", {"body": ""}, format="json").status_code for _ in range(3)] == [400] * 3
    over = api.post(f"{base}/messages/", {"body": "x"}, format="json")
    assert over.status_code == 429 and over.json()["code"] == "throttled" and int(over["Retry-After"]) >= 1
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_hotpath__never_answers_for_a_token_it_does_not_know(drf_calls, user, queue):
    api = api_client_for(user)
    base = f"/api/v1/queues/{queue.name}"
    api.credentials(HTTP_AUTHORIZATION="Token wq_not-a-real-key")
    assert api.post(f"{base}/messages/", {"body": "x"}, format="json").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Bearer abc")
    assert api.post(f"{base}/messages/", {"body": "x"}, format="json").status_code == 401
    assert len(drf_calls) == 2 and not Message.objects.exists()


@pytest.mark.django_db
def test_hotpath__refusals_are_drfs(drf_calls, queue):
    """A grantee without the permission, and a stranger, get DRF's 403 and 404 (the hot path passes them on)."""
    from queues.models import QueueGrant

    grantee, stranger = UserFactory(), UserFactory()
    QueueGrant.objects.create(queue=queue, user=grantee, can_send=True, can_receive=False, can_manage=False)
    base = f"/api/v1/queues/{queue.name}"
    grantee_api, stranger_api = api_client_for(grantee), api_client_for(stranger)
    for client in (grantee_api, stranger_api):
        client.get("/api/v1/queues/")  # caches the token: the hot path would now take it
    drf_calls.clear()
    assert grantee_api.post(f"{base}/messages/", {"body": "x"}, format="json").status_code == 201
    refused = grantee_api.post(f"{base}/receive/", {}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    hidden = stranger_api.post(f"{base}/messages/", {"body": "x"}, format="json")
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
    assert drf_calls == [f"{base}/receive/", f"{base}/messages/"]
