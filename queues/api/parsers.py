"""A JSON parser that refuses what the database or the service must never see.

DRF's own parser reads the raw stream (so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
never applies), follows any declared charset, and lets a deeply nested document
raise RecursionError (a 500). This one answers 413, 415 and 400 instead.
"""

from __future__ import annotations

import json
import math
import re

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser

from queues.conf import app_settings

# NUL and UTF-16 surrogates: PostgreSQL refuses the first, no UTF-8 encoder takes the second.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"Request body larger than the limit ({app_settings.MAX_REQUEST_BYTES} bytes)."
    default_code = "request_too_large"


def _charset(media_type: str | None) -> str | None:
    for param in (media_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _where(path: tuple) -> str:
    where = ""
    for step in path:
        where = f"{where}[{step}]" if isinstance(step, int) else (f"{where}.{step}" if where else step)
    return where or "the top"


def _check(value, max_depth: int, *, strings: bool = True) -> None:
    """Walk the document without recursion limits of our own: depth and, if `strings`, forbidden characters.

    Paths are kept as tuples and spelled out only for the error message.
    """
    stack = [(value, (), 0)]
    while stack:
        item, path, level = stack.pop()
        if level > max_depth:
            raise ParseError(f"JSON nested deeper than {max_depth} levels at {_where(path)}.")
        if isinstance(item, str):
            if _FORBIDDEN.search(item):
                raise ParseError(f"NUL or an unpaired surrogate in the string at {_where(path)}.")
        elif isinstance(item, dict):
            for key, child in item.items():
                if strings and _FORBIDDEN.search(key):
                    raise ParseError(f"NUL or an unpaired surrogate in a key at {_where(path)}.")
                if strings or isinstance(child, dict | list):
                    stack.append((child, (*path, key), level + 1))
        elif isinstance(item, list):
            stack.extend(
                (child, (*path, i), level + 1)
                for i, child in enumerate(item)
                if strings or isinstance(child, dict | list)
            )


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses as inf, which JSON cannot carry back out and the databases' JSON refuses.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        charset = _charset(media_type)
        if charset not in (None, "utf-8", "utf8"):
            raise UnsupportedMediaType(media_type, detail=f"Unsupported charset {charset!r}: send UTF-8 JSON.")
        limit = app_settings.MAX_REQUEST_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"Request body larger than {limit} bytes.")
        return loads(raw)


def loads(raw: bytes):
    """A UTF-8 JSON document within the limits, or ParseError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"Request body is not valid UTF-8 (byte {exc.start}).") from None
    try:
        data = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise ParseError("JSON nested too deeply.") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error: {exc}") from None
    # A parsed string holds NUL or a surrogate only through a \u escape: JSON refuses raw
    # control characters and the text is valid UTF-8. Without one, only the depth is walked.
    _check(data, app_settings.MAX_JSON_DEPTH, strings="\\u" in text)
    return data
