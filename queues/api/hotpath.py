"""Send, receive and ack answered before the middleware below and DRF, when nothing about them is unusual.

These three calls are nearly all of a queue's traffic, and most of their cost was the
framework around them: the rest of the middleware stack, URL resolving, DRF's request
wrapping, content negotiation and response rendering. This middleware answers such a
request itself, but only when every step is the plain case:

- `Authorization: Token <key>` with a key this process already knows to be valid
  (`services.token_known`: no lookup, and so no failed-authentication bookkeeping);
- a JSON body of a sane size, with no Accept header or one JSON satisfies;
- the token's rate budget not spent (the request is counted here, once: the DRF
  throttle reuses the count if the request goes on);
- a queue the token may use for the call;
- a body `queues.api.fastpath` accepts as plainly valid.

Anything else returns None at that step and the request goes on through the normal stack
(the rest of the middleware, DRF, the serializers), which answers it as it always has.
So every error is the normal stack's, and the answers here are the views' own
(`views.send_answer`, `receive_answer`, `receipts_answer`), rendered as DRF renders
them. `tests/test_hotpath_parity.py` compares the two paths' answers.
"""

from __future__ import annotations

import json
import re

from django.conf import settings
from django.http import HttpResponse
from rest_framework.exceptions import APIException

from queues import services
from queues.api import fastpath
from queues.api.parsers import loads
from queues.api.throttling import token_usage
from queues.api.views import _QUEUE_NAME, receipts_answer, receive_answer, send_answer
from queues.conf import app_settings

_ROUTE = re.compile(r"/api/v1/queues/([^/]+)/(messages|receive|ack)/\Z")
_ACCEPT = frozenset({None, "", "*/*", "application/json"})
_JSON = frozenset({"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"})
_NEED = {"messages": "send", "receive": "receive", "ack": "receive"}
# What DRF's view and the middleware after this one add to these answers (and Content-Length).
_HEADERS = {"Allow": "POST, OPTIONS", "X-Frame-Options": "DENY"}


class HotPathMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST":
            match = _ROUTE.match(request.path_info)
            if match is not None:
                answer = _answer(request, *match.groups())
                if answer is not None:
                    return _response(*answer)
        return self.get_response(request)


def _answer(request, name: str, call: str) -> tuple[int, dict] | None:
    """The status and body of a plain send/receive/ack, or None for the normal stack to answer."""
    meta = request.META
    if meta.get("HTTP_ACCEPT") not in _ACCEPT or meta.get("CONTENT_TYPE", "").lower() not in _JSON:
        return None
    keyword, _, key = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    if keyword != "Token" or not 0 < len(key) <= 200:
        return None
    token = services.token_known(key=key)
    if token is None:
        return None
    try:
        usage = token_usage(request, token.pk)
    except APIException:
        return None  # the counters cannot be reached: the normal stack answers (503)
    request.wonderq_rate_usage = usage
    if usage and usage["should_limit"]:
        return None
    user = token.user
    if not _QUEUE_NAME.fullmatch(name):
        return None
    queue, grant = services.queue_access_cached(name=name, user_id=user.pk)
    if queue is None:
        return None
    if not (user.is_staff or queue.owner_id == user.pk or (grant is not None and grant[_NEED[call]])):
        return None
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= min(app_settings.MAX_REQUEST_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE):
        return None
    try:
        data = loads(request.body)
        if call == "messages":
            messages = fastpath.send_messages(data, queue)
            return None if messages is None else (201, send_answer(queue, messages))
        if call == "receive":
            params = fastpath.receive_params(data)
            return None if params is None else (200, receive_answer(queue, user, params))
        receipts = fastpath.ack_receipts(data)
        return None if receipts is None else receipts_answer(queue, receipts, services.message_ack)
    except APIException:
        # Unparsable JSON, or the queue deleted since it was looked up: the normal stack says so.
        return None


def _response(code: int, body: dict) -> HttpResponse:
    # As DRF's JSONRenderer writes it (UNICODE_JSON, COMPACT_JSON and STRICT_JSON at their defaults).
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    content = text.encode()
    headers = {**_HEADERS, "Content-Length": str(len(content))}
    return HttpResponse(content, status=code, content_type="application/json", headers=headers)
