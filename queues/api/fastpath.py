"""Input checks for the hot path (send, receive, ack) without building a serializer.

DRF serializers cost tens of microseconds per field, and a batch of 100 messages is
a serializer per message. Each function here returns the parsed request when it is
plainly valid, or None when anything is unusual; None sends the request through the
serializer, which accepts it or explains what is wrong. So this module only ever
accepts a subset of what the serializers accept, and every error keeps one wording.
`tests/test_fastpath.py` holds the two to that.
"""

from __future__ import annotations

import re

from queues.api.serializers import _ATTRIBUTE_NAME, _DEDUP_ID, _NOT_SQS_TEXT
from queues.conf import app_settings
from queues.models import Queue
from queues.services import OutgoingMessage, message_json_size

_MESSAGE_KEYS = frozenset({"body", "attributes", "delay_seconds", "dedup_id"})
_RECEIVE_KEYS = frozenset({"max_messages", "visibility_timeout", "wait_seconds", "consumer"})
# Receipts we issue are "<id>.<hex>"; anything else takes the serializer's path.
_RECEIPT = re.compile(r"[!-~]{1,64}\Z")


def _int_within(value, high: int, low: int = 0) -> bool:
    return type(value) is int and low <= value <= high


def _attributes_ok(attributes) -> bool:
    if type(attributes) is not dict or len(attributes) > app_settings.MAX_ATTRIBUTES:
        return False
    for name, value in attributes.items():
        if not _ATTRIBUTE_NAME.match(name):
            return False
        kind = type(value)
        if kind is str:
            # Blank too: AttributesField checks values with StrictText, which is not allow_blank.
            if not value or _NOT_SQS_TEXT.search(value) or len(value) > app_settings.MAX_MESSAGE_BYTES:
                return False
        elif kind not in (int, float, bool):
            return False
    return True


def _message(data, limit: int) -> OutgoingMessage | None:
    if type(data) is not dict or not data.keys() <= _MESSAGE_KEYS:
        return None
    body = data.get("body")
    if type(body) is not str or not body or _NOT_SQS_TEXT.search(body):
        return None
    attributes = data.get("attributes")
    if attributes is not None and not _attributes_ok(attributes):
        return None
    delay = data.get("delay_seconds")
    if delay is not None and not _int_within(delay, app_settings.MAX_DELAY_SECONDS):
        return None
    dedup_id = data.get("dedup_id")
    if dedup_id is not None and (type(dedup_id) is not str or not _DEDUP_ID.match(dedup_id)):
        return None
    if any(data[key] is None for key in data):
        return None  # an explicit null: the serializer words the error
    if message_json_size(body=body, attributes=attributes) > limit:
        return None
    return OutgoingMessage(body=body, attributes=attributes or {}, delay_seconds=delay, dedup_id=dedup_id)


def send_messages(data, queue: Queue) -> list[OutgoingMessage] | None:
    """One message `{body, ...}` or a batch `{messages: [...]}`, or None."""
    if type(data) is not dict:
        return None
    limit = queue.accepts_bytes
    if "messages" not in data:
        message = _message(data, limit)
        return None if message is None else [message]
    batch = data["messages"]
    if len(data) != 1 or type(batch) is not list or not 1 <= len(batch) <= app_settings.MAX_BATCH:
        return None
    messages = [_message(item, limit) for item in batch]
    return None if None in messages else messages


def receive_params(data) -> dict | None:
    """`{max_messages?, visibility_timeout?, wait_seconds?, consumer?}` with defaults, or None."""
    if type(data) is not dict or not data.keys() <= _RECEIVE_KEYS:
        return None
    params = {
        "max_messages": data.get("max_messages", 1),
        "wait_seconds": data.get("wait_seconds", 0),
        "consumer": data.get("consumer", ""),
    }
    if not _int_within(params["max_messages"], app_settings.MAX_BATCH, low=1):
        return None
    if not _int_within(params["wait_seconds"], app_settings.MAX_WAIT_SECONDS):
        return None
    consumer = params["consumer"]
    if type(consumer) is not str or len(consumer) > 200 or _NOT_SQS_TEXT.search(consumer):
        return None
    if "visibility_timeout" in data:
        if not _int_within(data["visibility_timeout"], app_settings.MAX_VISIBILITY_TIMEOUT):
            return None
        params["visibility_timeout"] = data["visibility_timeout"]
    return params


def ack_receipts(data) -> dict | None:
    """`{receipt}` or `{receipts: [...]}` as the serializer's validated data, or None."""
    if type(data) is not dict or len(data) != 1:
        return None
    if "receipt" in data:
        receipt = data["receipt"]
        return {"receipt": receipt} if type(receipt) is str and _RECEIPT.match(receipt) else None
    receipts = data.get("receipts")
    if type(receipts) is not list or not 1 <= len(receipts) <= app_settings.MAX_BATCH:
        return None
    for receipt in receipts:
        if type(receipt) is not str or not _RECEIPT.match(receipt):
            return None
    return {"receipts": receipts}
