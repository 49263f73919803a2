"""`queues.api.fastpath` against the serializers it stands in for.

The fast checks may only accept a subset of what MessageIn / SendBatchIn / ReceiveIn / ReceiptsIn
accept, and what they accept must come out exactly as the serializer path would make it. A table
of inputs (valid, invalid, and valid-but-declined) and a few thousand seeded random variants of
valid requests hold them to that; a handful of requests through the API check that the views use
both paths as they should.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import reprlib
from typing import NamedTuple

import pytest

from queues.api import fastpath
from queues.api import serializers as s
from queues.conf import app_settings
from queues.models import Message
from queues.services import OutgoingMessage, message_json_size
from tests.factories import QueueFactory

API = "/api/v1"
# Limits as the test settings leave them; the table is written against these values.
MAX_BATCH = app_settings.MAX_BATCH
MAX_ATTRIBUTES = app_settings.MAX_ATTRIBUTES
MAX_DELAY = app_settings.MAX_DELAY_SECONDS
MAX_VISIBILITY = app_settings.MAX_VISIBILITY_TIMEOUT
MAX_WAIT = app_settings.MAX_WAIT_SECONDS
MAX_BYTES = app_settings.MAX_MESSAGE_BYTES
# max_message_bytes of the small queue that size cases are sent to.
TINY = 40

ACCEPT = "accept"  # valid, and the fast path must take it (so an always-None fastpath fails)
REJECT = "reject"  # invalid: the fast path declines and the serializer refuses
DECLINE = "decline"  # the serializer accepts (coercing, usually), the fast path leaves it to it


class Case(NamedTuple):
    endpoint: str  # "send", "send-tiny" (to a queue of TINY bytes), "receive" or "ack"
    name: str
    payload: object
    verdict: str


# --- the two paths --------------------------------------------------------------------------------


def _validated(serializer_class, data, **context):
    serializer = serializer_class(data=data, context=context)
    if serializer.is_valid():
        return serializer.validated_data, None
    return None, serializer.errors


def serializer_send(data, queue):
    """What QueueViewSet.send builds from the serializers: the OutgoingMessages, or None and the errors."""
    batch = isinstance(data, dict) and "messages" in data
    validated, errors = _validated(s.SendBatchIn if batch else s.MessageIn, data, queue=queue)
    if errors:
        return None, errors
    return [OutgoingMessage(**message) for message in (validated["messages"] if batch else [validated])], None


FAST = {
    "send": fastpath.send_messages,
    "receive": lambda data, queue: fastpath.receive_params(data),
    "ack": lambda data, queue: fastpath.ack_receipts(data),
}
SLOW = {
    "send": serializer_send,
    "receive": lambda data, queue: _validated(s.ReceiveIn, data),
    "ack": lambda data, queue: _validated(s.ReceiptsIn, data),
}


def typed(value):
    """`value` with every scalar tagged by its type, so True, 1, 1.0 and "1" differ and dict order does not."""
    if dataclasses.is_dataclass(value):
        return type(value).__name__, typed({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return "dict", tuple(sorted((key, typed(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return type(value).__name__, tuple(typed(item) for item in value)
    return type(value).__name__, value


def _short(value) -> str:
    """repr() cut short: some payloads hold 256 KiB bodies or 100 messages."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 80
    shortener.maxlist, shortener.maxdict, shortener.maxlevel = 4, 6, 4
    return shortener.repr(value)


def both_paths(endpoint: str, payload, queue):
    """Run the fast path and the serializer path on copies of `payload`; assert the contract between them."""
    given = copy.deepcopy(payload)
    fast = FAST[endpoint](given, queue)
    # On None the view hands the very same request.data to the serializer.
    assert typed(given) == typed(payload), f"the fast path changed its input: {_short(payload)}"
    slow, errors = SLOW[endpoint](copy.deepcopy(payload), queue)
    if fast is not None:
        assert slow is not None, f"fast path accepts what the serializer refuses: {_short(payload)} -> {errors}"
        assert typed(fast) == typed(slow), f"{_short(payload)}: fast {_short(fast)} != serializer {_short(slow)}"
    return fast, slow, errors


# --- the table ------------------------------------------------------------------------------------


def _at_limit(limit: int, char: str, attributes: dict | None = None, extra: int = 0) -> dict:
    """A message of exactly `limit` + `extra` bytes: ASCII padding, then as many `char` as fit."""
    room = limit - message_json_size(body="", attributes=attributes)
    width = len(char.encode())
    body = "x" * (room % width) + char * (room // width) + "x" * extra
    assert message_json_size(body=body, attributes=attributes) == limit + extra
    message = {"body": body}
    if attributes is not None:
        message["attributes"] = attributes
    return message


EVERY_KIND = {
    "kind": "invoice",
    "n": 3,
    "ratio": 0.5,
    "yes": True,
    "no": False,
    "big": 10**20,
    "neg": -7,
    "a.b-c_d": "v",
}
FULL = {"body": "full", "attributes": {"k": "v"}, "delay_seconds": 5, "dedup_id": "order-42"}
UNICODE = "café \U0001f600 \t\n\r \x7f € \ue000 \ud7ff \ufffd \U00020000 \U0010ffff"

SEND_ACCEPT = {
    "plain": {"body": "hello"},
    "whitespace-body-kept": {"body": "  padded \n"},
    "attributes-every-kind": {"body": "x", "attributes": EVERY_KIND},
    "attributes-empty": {"body": "x", "attributes": {}},
    "attributes-at-max-count": {"body": "x", "attributes": {f"a{i}": i for i in range(MAX_ATTRIBUTES)}},
    "attribute-name-256": {"body": "x", "attributes": {"k" * 256: "v"}},
    "attribute-whitespace-value": {"body": "x", "attributes": {"k": " "}},
    "attribute-zero-values": {"body": "x", "attributes": {"i": 0, "f": 0.0, "neg": -0.5}},
    "delay-0": {"body": "x", "delay_seconds": 0},
    "delay-max": {"body": "x", "delay_seconds": MAX_DELAY},
    "dedup-id": {"body": "x", "dedup_id": "order-42"},
    "dedup-id-1": {"body": "x", "dedup_id": "!"},
    "dedup-id-128": {"body": "x", "dedup_id": "~" * 128},
    "every-field": FULL,
    "unicode-body": {"body": UNICODE},
    "astral-emoji-only": {"body": "\U0001f600"},
    "unicode-attribute": {"body": "x", "attributes": {"e": "\U0001f600 é", "cjk": "\U00020000"}},
    "bom-and-del": {"body": "\ufeff\x7f"},
    "at-default-max-ascii": {"body": "x" * MAX_BYTES},
    "at-default-max-two-byte": {"body": "é" * (MAX_BYTES // 2)},
    "batch-of-1": {"messages": [{"body": "x"}]},
    "batch-of-max": {
        "messages": [
            {"body": f"m{i} \U0001f600", "attributes": {"i": i}, "delay_seconds": i % 3, "dedup_id": f"d{i % 7}"}
            for i in range(MAX_BATCH)
        ]
    },
    "batch-mixed-fields": {"messages": [{"body": "a"}, FULL, {"body": "b", "attributes": EVERY_KIND}]},
    "batch-repeated-dedup-id": {"messages": [{"body": "a", "dedup_id": "d"}, {"body": "c", "dedup_id": "d"}]},
}
SEND_TINY_ACCEPT = {
    "at-limit-ascii": _at_limit(TINY, "x"),
    "at-limit-two-byte": _at_limit(TINY, "é"),
    "at-limit-three-byte": _at_limit(TINY, "€"),
    "at-limit-emoji": _at_limit(TINY, "\U0001f600"),
    "at-limit-with-attributes": _at_limit(TINY, "é", {"k": "v"}),
    "at-limit-emoji-attribute": _at_limit(TINY, "\U0001f600", {"e": "\U0001f600", "n": 1.5}),
    "batch-at-limit": {"messages": [_at_limit(TINY, "é"), _at_limit(TINY, "\U0001f600", {"b": True})]},
}
SEND_TINY_REJECT = {
    "over-by-1-ascii": _at_limit(TINY, "x", extra=1),
    "over-by-1-two-byte": _at_limit(TINY, "é", extra=1),
    "over-by-1-emoji": _at_limit(TINY, "\U0001f600", extra=1),
    "over-by-1-with-attributes": _at_limit(TINY, "é", {"k": "v"}, extra=1),
    "over-by-1-emoji-attribute": _at_limit(TINY, "\U0001f600", {"e": "\U0001f600"}, extra=1),
    "over-by-3-bytes-in-one-emoji": {"body": "x" * (TINY - 1) + "\U0001f600"},
    "body-fits-attributes-do-not": {"body": "x" * (TINY - 5), "attributes": {"key": "value"}},
    "batch-one-over": {"messages": [_at_limit(TINY, "é"), _at_limit(TINY, "é", extra=1)]},
}
# FORBIDDEN_CHARACTER_BODIES of test_api.py as the parser would hand them over, and a few more.
FORBIDDEN = {
    "nul": "\x00",
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "\udc00",
    "reversed-pair": "\ude00\ud83d",
    "u0001": "\x01",
    "u000b": "\x0b",
    "u001f": "\x1f",
    "ufffe": "\ufffe",
    "uffff": "\uffff",
}
SEND_REJECT = {
    # A number is not the string it prints as (7 would be a duplicate of "7").
    "dedup-int": {"body": "x", "dedup_id": 123},
    "dedup-float": {"body": "x", "dedup_id": 1.5},
    "batch-dedup-int": {"messages": [{"body": "x", "dedup_id": 7}]},
    # shape
    **{
        f"top-level-{type(v).__name__}-{i}": v for i, v in enumerate([[], [{"body": "x"}], "x", "", 1, 1.5, True, None])
    },
    "empty": {},
    "no-body": {"attributes": {"a": "b"}},
    "unknown-key": {"body": "x", "surprise": 1},
    "unknown-key-only": {"surprise": 1},
    "nul-in-unknown-key": {"body": "x", "extra\x00": 1},
    # body
    **{f"body-{type(v).__name__}-{i}": {"body": v} for i, v in enumerate([1, 1.5, None, [], ["x"], {}, True, False])},
    "body-dict": {"body": {"text": "x"}},
    "body-blank": {"body": ""},
    "body-over-default-max": {"body": "x" * (MAX_BYTES + 1)},
    "body-over-default-max-two-byte": {"body": "é" * (MAX_BYTES // 2) + "x"},
    **{f"body-{name}": {"body": f"a{char}b"} for name, char in FORBIDDEN.items()},
    # attributes
    "attributes-null": {"body": "x", "attributes": None},
    "attributes-over-max-count": {"body": "x", "attributes": {f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}},
    "attribute-name-space": {"body": "x", "attributes": {"bad name": "x"}},
    "attribute-name-empty": {"body": "x", "attributes": {"": "x"}},
    "attribute-name-non-ascii": {"body": "x", "attributes": {"é": "x"}},
    "attribute-name-257": {"body": "x", "attributes": {"k" * 257: "x"}},
    "attribute-name-newline-tail": {"body": "x", "attributes": {"k\n": "x"}},
    "attribute-dict-value": {"body": "x", "attributes": {"k": {"nested": 1}}},
    "attribute-list-value": {"body": "x", "attributes": {"k": [1, 2]}},
    "attribute-null-value": {"body": "x", "attributes": {"k": None}},
    "attribute-blank-value": {"body": "x", "attributes": {"k": ""}},
    "attribute-value-over-max-bytes": {"body": "x", "attributes": {"k": "v" * (MAX_BYTES + 1)}},
    "attributes-list": {"body": "x", "attributes": ["k", "v"]},
    "attributes-str": {"body": "x", "attributes": "k=v"},
    "attribute-nested-nul": {"body": "x", "attributes": {"k": {"deeper": ["\x00"]}}},
    **{f"attribute-value-{name}": {"body": "x", "attributes": {"k": f"v{char}"}} for name, char in FORBIDDEN.items()},
    **{f"attribute-name-{name}": {"body": "x", "attributes": {f"k{char}": "v"}} for name, char in FORBIDDEN.items()},
    # delay_seconds
    **{
        f"delay-{i}-{type(v).__name__}": {"body": "x", "delay_seconds": v}
        for i, v in enumerate([-1, MAX_DELAY + 1, "5", "0", 1.5, 0.0, 60.0, None, True, False, [5], {"s": 5}, 10**5000])
    },
    # dedup_id
    **{
        f"dedup-{i}": {"body": "x", "dedup_id": v}
        for i, v in enumerate(
            [
                "",
                "has space",
                " padded ",
                "trailing\n",
                "x" * 129,
                "é",
                "a\x00",
                "a\x01",
                "a\ufffe",
                "\ud800",
                None,
                True,
            ]
        )
    },
    # batches
    "batch-empty": {"messages": []},
    "batch-null": {"messages": None},
    "batch-dict": {"messages": {}},
    "batch-str": {"messages": "x"},
    "batch-obj": {"messages": {"body": "x"}},
    "batch-over-max": {"messages": [{"body": "x"}] * (MAX_BATCH + 1)},
    "batch-one-bad-body": {"messages": [{"body": "ok"}, {"body": 5}, {"body": "ok"}]},
    "batch-null-item": {"messages": [{"body": "ok"}, None]},
    "batch-str-item": {"messages": ["x"]},
    "batch-list-item": {"messages": [[{"body": "x"}]]},
    "batch-nested-batch": {"messages": [{"messages": [{"body": "x"}]}]},
    "batch-with-single-fields": {"messages": [{"body": "x"}], "body": "y"},
    "batch-with-unknown-key": {"messages": [{"body": "x"}], "surprise": 1},
    "batch-item-unknown-key": {"messages": [{"body": "x", "surprise": 1}]},
    "batch-item-nul": {"messages": [{"body": "ok"}, {"body": "\x00"}]},
    "batch-item-surrogate-attribute": {"messages": [{"body": "ok", "attributes": {"k": "\ud800"}}]},
    "batch-item-control": {"messages": [{"body": "\x02"}]},
    "batch-item-blank-attribute": {"messages": [{"body": "ok", "attributes": {"k": ""}}]},
    "batch-item-delay-bool": {"messages": [{"body": "ok", "delay_seconds": True}]},
    "batch-item-null-dedup": {"messages": [{"body": "ok", "dedup_id": None}]},
}

RECEIVE_ACCEPT = {
    "defaults": {},
    "max-messages-1": {"max_messages": 1},
    "max-messages-max": {"max_messages": MAX_BATCH},
    "visibility-0": {"visibility_timeout": 0},
    "visibility-max": {"visibility_timeout": MAX_VISIBILITY},
    "wait-0": {"wait_seconds": 0},
    "wait-max": {"wait_seconds": MAX_WAIT},
    "consumer-blank": {"consumer": ""},
    "consumer": {"consumer": "worker-1"},
    "consumer-200": {"consumer": "c" * 200},
    "consumer-200-emoji": {"consumer": "\U0001f600" * 200},
    "consumer-unicode": {"consumer": UNICODE},
    "consumer-padded": {"consumer": " padded "},
    "everything": {"max_messages": 10, "visibility_timeout": 60, "wait_seconds": 2, "consumer": "w"},
}
RECEIVE_REJECT = {
    **{f"top-level-{type(v).__name__}-{i}": v for i, v in enumerate([[], [{}], "x", "", 1, 1.5, True, None])},
    "unknown-key": {"max_mesages": 1},
    "unknown-key-with-valid": {"max_messages": 1, "surprise": True},
    "consumer-201": {"consumer": "c" * 201},
    **{f"consumer-{name}": {"consumer": f"a{char}"} for name, char in FORBIDDEN.items()},
    **{
        f"{field}-{type(v).__name__}-{v!r}": {field: v}
        for field, values in {
            "max_messages": [0, -1, MAX_BATCH + 1, "1", 1.0, 2.5, True, False, None, [1], {"n": 1}],
            "visibility_timeout": [-1, MAX_VISIBILITY + 1, "30", 30.0, True, False, None, [30]],
            "wait_seconds": [-1, MAX_WAIT + 1, "0", 0.5, 0.0, True, False, None, {"s": 1}],
            "consumer": [5, 1.5, True, None, ["a"], {"a": 1}],
        }.items()
        for v in values
    },
}

RECEIPTS = [f"{i}.{i:032x}" for i in range(MAX_BATCH)]
ACK_ACCEPT = {
    "receipt": {"receipt": "1.abc"},
    "receipt-1": {"receipt": "!"},
    "receipt-64": {"receipt": "r" * 64},
    "receipt-every-printable": {"receipt": "".join(map(chr, range(33, 97)))},
    "receipts-1": {"receipts": ["1.a"]},
    "receipts-max": {"receipts": RECEIPTS},
    "receipts-repeated": {"receipts": ["1.a", "1.a"]},
}
ACK_REJECT = {
    "receipt-int": {"receipt": 123},
    "receipt-float": {"receipt": 1.5},
    "receipts-int-item": {"receipts": [123, "1.a"]},
    **{f"top-level-{type(v).__name__}-{i}": v for i, v in enumerate([[], ["1.a"], "1.a", "", 1, True, None])},
    "neither": {},
    "both": {"receipt": "1.a", "receipts": ["1.a"]},
    "unknown-key": {"receipt": "1.a", "stray": 1},
    "unknown-key-only": {"stray": "1.a"},
    "receipt-null": {"receipt": None},
    "receipt-blank": {"receipt": ""},
    "receipt-65": {"receipt": "r" * 65},
    "receipt-bool": {"receipt": True},
    "receipt-list": {"receipt": ["1.a"]},
    "receipt-dict": {"receipt": {"r": "1.a"}},
    "receipt-nul": {"receipt": "1.a\x00"},
    "receipt-surrogate": {"receipt": "1.\ud800"},
    "receipts-null": {"receipts": None},
    "receipts-empty": {"receipts": []},
    "receipts-over-max": {"receipts": [*RECEIPTS, "x"]},
    "receipts-str": {"receipts": "1.a"},
    "receipts-dict": {"receipts": {"r": "1.a"}},
    "receipts-dict-item": {"receipts": [{"r": 1}]},
    "receipts-null-item": {"receipts": ["1.a", None]},
    "receipts-bool-item": {"receipts": [True]},
    "receipts-list-item": {"receipts": [["1.a"]]},
    "receipts-blank-item": {"receipts": ["1.a", ""]},
    "receipts-65-item": {"receipts": ["1.a", "r" * 65]},
    "receipts-nul-item": {"receipts": ["\x00"]},
}
ACK_DECLINE = {
    # The serializer takes any text without NUL or surrogates; receipts we issue are printable
    # ASCII, so the rest goes the long way (and is answered not_found).
    "receipt-space": {"receipt": "has space"},
    "receipt-padded": {"receipt": " 1.a "},
    "receipt-non-ascii-digit": {"receipt": "\u00b2.abc"},
    "receipt-emoji": {"receipt": "1.\U0001f600"},
    "receipt-control": {"receipt": "1.a\x01"},
    "receipt-ufffe": {"receipt": "\ufffe"},
    "receipts-non-ascii-item": {"receipts": ["1.a", "\u2460.x"]},
    "receipt-64-chars-not-bytes": {"receipt": "é" * 64},
}

CASES = [
    Case(endpoint, name, payload, verdict)
    for endpoint, verdict, table in [
        ("send", ACCEPT, SEND_ACCEPT),
        ("send", REJECT, SEND_REJECT),
        ("send-tiny", ACCEPT, SEND_TINY_ACCEPT),
        ("send-tiny", REJECT, SEND_TINY_REJECT),
        ("receive", ACCEPT, RECEIVE_ACCEPT),
        ("receive", REJECT, RECEIVE_REJECT),
        ("ack", ACCEPT, ACK_ACCEPT),
        ("ack", REJECT, ACK_REJECT),
        ("ack", DECLINE, ACK_DECLINE),
    ]
    for name, payload in table.items()
]


@pytest.fixture(scope="module")
def queues():
    """Unsaved queues (neither path reads the database): the default size limit, and TINY bytes."""
    return {
        "send": QueueFactory.build(name="jobs"),
        "send-tiny": QueueFactory.build(name="tiny", max_message_bytes=TINY),
    }


def test_fastpath__table_has_every_verdict_for_every_endpoint():
    verdicts = {(case.endpoint.removesuffix("-tiny"), case.verdict) for case in CASES}
    assert verdicts >= {(e, v) for e in ("send", "receive", "ack") for v in (ACCEPT, REJECT)}
    assert len({(case.endpoint, case.name) for case in CASES}) == len(CASES), "duplicate case names"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.endpoint}-{c.verdict}-{c.name}" for c in CASES])
def test_fastpath__table(queues, case):
    endpoint = case.endpoint.removesuffix("-tiny")
    fast, slow, errors = both_paths(endpoint, case.payload, queues.get(case.endpoint))

    if case.verdict == ACCEPT:
        assert slow is not None, errors
        assert fast is not None, "the fast path should take this plainly valid request"
    elif case.verdict == REJECT:
        assert slow is None, "the serializer accepts this: the case belongs elsewhere"
        assert fast is None
    else:
        assert slow is not None, errors
        assert fast is None


def test_fastpath__receive_defaults_are_the_serializers():
    assert fastpath.receive_params({}) == {"max_messages": 1, "wait_seconds": 0, "consumer": ""}
    assert "visibility_timeout" not in fastpath.receive_params({"consumer": "w"})


def test_fastpath__send_leaves_absent_fields_to_the_queue(queues):
    [message] = fastpath.send_messages({"body": "x"}, queues["send"])

    assert message == OutgoingMessage(body="x", attributes={}, delay_seconds=None, dedup_id=None)


def test_fastpath__limits_read_when_checking(queues, settings):
    """Both paths read WONDERQ_* when they check, so a changed limit moves them together."""
    settings.WONDERQ_MAX_BATCH = 2
    settings.WONDERQ_MAX_ATTRIBUTES = 1

    for endpoint, payload in [
        ("send", {"messages": [{"body": "x"}] * 3}),
        ("send", {"body": "x", "attributes": {"a": 1, "b": 2}}),
        ("receive", {"max_messages": 3}),
        ("ack", {"receipts": ["1.a"] * 3}),
    ]:
        assert both_paths(endpoint, payload, queues["send"])[:2] == (None, None)
    assert both_paths("ack", {"receipts": ["1.a"] * 2}, queues["send"])[0] is not None


# --- generated variants ---------------------------------------------------------------------------

KNOWN_KEYS = {
    "send": ["body", "attributes", "delay_seconds", "dedup_id", "messages"],
    "receive": ["max_messages", "visibility_timeout", "wait_seconds", "consumer"],
    "ack": ["receipt", "receipts"],
}
SEEDS = {
    "send": [
        {"body": "hello"},
        {"body": "x", "attributes": {"k": "v", "n": 1}},
        FULL,
        {"body": "é" * 10, "attributes": {"e": "\U0001f600", "f": 0.5, "b": False}},
        {"messages": [{"body": "a"}]},
        {"messages": [{"body": "a", "dedup_id": "d"}, FULL, {"body": "\U0001f600", "attributes": {"x": True}}]},
    ],
    "receive": [{}, {"max_messages": 5}, RECEIVE_ACCEPT["everything"], {"consumer": "w", "wait_seconds": 0}],
    "ack": [{"receipt": "1.abc"}, {"receipts": ["1.a", "2.b"]}, {"receipts": RECEIPTS[:3]}],
}
ODD_CHARS = [*FORBIDDEN.values(), "\t", "\n", "\r", " ", "\x7f", "é", "€", "\U0001f600", "\U0010ffff", "\ue000"]
ODD_CHARS += ["\ud7ff", "\ufffd", "\ufeff", "\u00b2", "\u2460", "~", "!", "\\", '"']
ODD_VALUES = [None, True, False, 0, 1, -1, 0.0, 1.0, 0.5, 10**20, "", " ", "1", "x", [], ["x"], {}, {"body": "x"}]
BOUNDARY_INTS = sorted(
    {n + d for n in (0, 1, MAX_BATCH, MAX_WAIT, MAX_DELAY, MAX_VISIBILITY, MAX_ATTRIBUTES) for d in (-1, 0, 1)}
)
BOUNDARY_LENGTHS = sorted({n + d for n in (1, 64, 128, 200, 256, TINY) for d in (-1, 0, 1)})
WIDE_CHARS = ["x", "é", "€", "\U0001f600"]


def _odd_text(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.4:
        at = rng.randint(0, len(text))
        return text[:at] + rng.choice(ODD_CHARS) + text[at:]
    char = rng.choice(["!", "~", *WIDE_CHARS, *ODD_CHARS[:4]])
    if roll < 0.7:
        # Around TINY bytes in characters of 1-4 bytes, for the size check.
        width = len(char.encode("utf-8", "surrogatepass"))
        return char * (TINY // width + rng.choice((-1, 0, 1)))
    return char * rng.choice(BOUNDARY_LENGTHS)


def _sized(rng: random.Random, message: dict) -> dict:
    """`message` with a body of TINY bytes, one under or one over, counting its attributes."""
    attributes = message.get("attributes")
    try:
        room = TINY - message_json_size(body="", attributes=attributes if isinstance(attributes, dict) else None)
    except (TypeError, ValueError):
        return message
    char = rng.choice(WIDE_CHARS)
    width = len(char.encode())
    room += rng.choice((-1, 0, 1))
    if room > 0:
        message["body"] = "x" * (room % width) + char * (room // width)
    return message


def _odd_scalar(rng: random.Random, value):
    roll = rng.random()
    if isinstance(value, str) and roll < 0.6:
        return _odd_text(rng, value)
    if roll < 0.8:
        number = rng.choice(BOUNDARY_INTS)
        # The same number as another type: bool, float, or a string of digits.
        return rng.choice([number, number, float(number), str(number), bool(number % 2)])
    return copy.deepcopy(rng.choice(ODD_VALUES))


def mutate(rng: random.Random, value, keys: list[str]):
    """One random change somewhere inside the JSON-like `value`; returns the changed value."""
    if isinstance(value, dict) and value and rng.random() < 0.5:
        key = rng.choice(list(value))
        value[key] = mutate(rng, value[key], keys)
        return value
    if isinstance(value, list) and value and rng.random() < 0.5:
        at = rng.randrange(len(value))
        value[at] = mutate(rng, value[at], keys)
        return value
    roll = rng.random()
    if isinstance(value, dict) and "body" in value and roll < 0.2:
        return _sized(rng, value)
    if isinstance(value, dict):
        if roll < 0.3 and value:
            del value[rng.choice(list(value))]
        elif roll < 0.7:
            key = rng.choice([*keys, "k", "surprise", "a.b", "bad name", "", "\x00", "\ud800", "k" * 257])
            value[key] = _odd_scalar(rng, rng.choice(["x", 1, None]))
        elif roll < 0.85:
            # Attribute-like maps around the count limit.
            return {f"a{i}": rng.choice(["v", 1, 0.5, True]) for i in range(MAX_ATTRIBUTES + rng.choice((-1, 0, 1)))}
        else:
            return _odd_scalar(rng, value)
        return value
    if isinstance(value, list):
        if roll < 0.2 and value:
            value.pop(rng.randrange(len(value)))
        elif roll < 0.4 and value:
            # Around MAX_BATCH items, made of the items there are.
            size = rng.choice((MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1)) if rng.random() < 0.3 else len(value) + 1
            return [copy.deepcopy(value[i % len(value)]) for i in range(size)]
        elif roll < 0.5:
            return []
        else:
            return _odd_scalar(rng, value)
        return value
    if roll < 0.1:
        return [value]  # a nested value where a scalar belongs
    return _odd_scalar(rng, value)


VARIANTS = {"send": 2000, "receive": 1000, "ack": 1000}


@pytest.mark.parametrize("endpoint", list(VARIANTS))
def test_fastpath__generated_variants(queues, endpoint):
    rng = random.Random(f"wonderq-fastpath-{endpoint}")
    seen = {"fast": 0, "serializer-only": 0, "refused": 0}
    for _ in range(VARIANTS[endpoint]):
        payload = copy.deepcopy(rng.choice(SEEDS[endpoint]))
        for _ in range(rng.choice((1, 1, 2, 3))):
            payload = mutate(rng, payload, KNOWN_KEYS[endpoint])
        queue = queues["send-tiny" if endpoint == "send" and rng.random() < 0.5 else "send"]

        fast, slow, _ = both_paths(endpoint, payload, queue)

        seen["fast" if fast is not None else "serializer-only" if slow is not None else "refused"] += 1
    # Variants that only ever fail (or only ever pass) would prove nothing.
    assert seen["fast"] >= VARIANTS[endpoint] // 20, seen
    assert seen["refused"] >= VARIANTS[endpoint] // 4, seen


# --- through the API ------------------------------------------------------------------------------


@pytest.fixture
def lean_settings(settings):
    """As test_api.py: no WhiteNoise (no test asks for a static file), cheap password hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.startswith("whitenoise.")]


def _no_serializers(monkeypatch):
    """Make the input serializers of send, receive and ack fail loudly if the view builds one."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} used: the fast path should have taken this request")

    for serializer_class in (s.MessageIn, s.SendBatchIn, s.ReceiveIn, s.ReceiptsIn):
        monkeypatch.setattr(serializer_class, "is_valid", refuse)


def has_key(data, key: str) -> bool:
    """Whether `key` names a field anywhere in a (nested) DRF error body."""
    if isinstance(data, dict):
        return key in data or any(has_key(value, key) for value in data.values())
    if isinstance(data, list):
        return any(has_key(value, key) for value in data)
    return False


def _post(client, action: str, payload):
    return client.post(f"{API}/queues/jobs/{action}/", payload, format="json")


def test_api__fast_path_sends_receives_and_acks_without_a_serializer(lean_settings, api, queue, monkeypatch):
    _no_serializers(monkeypatch)

    single = _post(api, "messages", {"body": "caf\u00e9 \U0001f600", "attributes": {"n": 1, "b": True}})
    batch = _post(api, "messages", {"messages": [{"body": "a", "dedup_id": "d"}, {"body": "b", "delay_seconds": 0}]})
    received = _post(api, "receive", {"max_messages": 2, "consumer": "w"})
    first, second = received.json()["messages"]
    acked = _post(api, "ack", {"receipt": first["receipt"]})
    batch_acked = _post(api, "ack", {"receipts": [second["receipt"]]})

    assert (single.status_code, batch.status_code, received.status_code) == (201, 201, 200), batch.content
    assert (first["body"], first["attributes"]) == ("caf\u00e9 \U0001f600", {"n": 1, "b": True})
    assert second["body"] == "a"
    assert acked.status_code == 200 and acked.json()["status"] == "acked"
    assert batch_acked.json()["results"][0]["status"] == "acked"
    assert Message.objects.get(body="a").dedup_id == "d"


@pytest.mark.parametrize(
    ("action", "payload", "field"),
    [
        ("messages", {"body": "x", "attributes": {"k": ""}}, "attributes"),
        ("messages", {"body": "x", "delay_seconds": True}, "delay_seconds"),
        ("messages", {"messages": [{"body": "ok"}, {"body": "x", "dedup_id": "has space"}]}, "dedup_id"),
        ("receive", {"max_messages": 1.0}, "max_messages"),
        ("receive", {"consumer": "a\ufffe"}, "consumer"),
        ("ack", {"receipts": []}, "receipts"),
        ("ack", {"receipt": "r" * 65}, "receipt"),
    ],
    ids=["blank-attribute", "bool-delay", "batch-dedup", "float-max", "ufffe-consumer", "no-receipts", "receipt-65"],
)
def test_api__declined_request_gets_the_serializers_400(lean_settings, api, queue, action, payload, field):
    response = _post(api, action, payload)

    assert response.status_code == 400, response.content
    assert has_key(response.json(), field), response.json()
    assert not Message.objects.exists()


def test_api__declined_but_valid_request_is_answered_by_the_serializer_path(lean_settings, api, queue):
    not_found = _post(api, "ack", {"receipt": "has space"})

    assert not_found.status_code == 404
    assert not_found.json()["code"] == "not_found"
