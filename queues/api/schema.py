"""OpenAPI: what the schema says beyond what drf-spectacular infers.

- Input limits the serializers enforce in code (unknown fields, WONDERQ_* maxima,
  non-empty lists, "one of these fields"), so generated requests (tests/test_fuzz.py)
  are valid when they mean to be. serializers.py imports this module to register them.
- The answers that shared machinery gives: DRF raises the error answers from
  authentication, parsing, throttling and validation, and the HTTP server refuses
  what is too large to parse, so a postprocessing hook adds them once rather than
  on every view. tests/test_fuzz.py checks that every answer is documented.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension

from queues.conf import app_settings


class StrictSerializerSchema(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown fields; `schema_constraints` adds rules across fields."""

    target_class = "queues.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        schema.update(getattr(self.target, "schema_constraints", {}))
        return schema


class StrictIntegerSchema(OpenApiSerializerFieldExtension):
    """The maximum a StrictInteger reads from a WONDERQ_* setting."""

    target_class = "queues.api.serializers.StrictInteger"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if self.target.max_setting:
            schema["maximum"] = getattr(app_settings, self.target.max_setting)
        return schema


class AttributesFieldSchema(OpenApiSerializerFieldExtension):
    """Up to WONDERQ_MAX_ATTRIBUTES named values: non-empty strings, numbers or booleans."""

    target_class = "queues.api.serializers.AttributesField"

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["maxProperties"] = app_settings.MAX_ATTRIBUTES
        schema["additionalProperties"] = {
            "anyOf": [{"type": "string", "minLength": 1}, {"type": "number"}, {"type": "boolean"}]
        }
        schema["description"] = "Names of 1-256 characters of A-Z a-z 0-9 _ . -"
        return schema


class LimitedListSchema(OpenApiSerializerFieldExtension):
    """A LimitedList holds 1 (unless allow_empty) to WONDERQ_MAX_BATCH items."""

    target_class = "queues.api.serializers.LimitedList"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["maxItems"] = app_settings.MAX_BATCH
        if not self.target.allow_empty:
            schema["minItems"] = 1
        return schema


ERROR_SCHEMA = {
    "type": "object",
    "description": "`{detail, code}` for errors of the request as a whole; field errors map field names to messages.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}

_ERRORS = {
    "400": "Malformed request: the body names the field or the problem.",
    "401": "Missing, malformed, expired or revoked token.",
    "403": "The token may see the queue but not do this.",
    "404": "No such queue, or one this token may not see.",
    "405": "Method not allowed.",
    "406": "Not acceptable: the API answers JSON.",
    "409": "Conflict: the name is taken, or the receipt is stale.",
    "413": "Request body larger than WONDERQ_MAX_REQUEST_BYTES.",
    "415": "Unsupported media type or charset: send UTF-8 JSON.",
    "429": "Rate limit exceeded; see Retry-After.",
    "503": "The database is busy (no pooled connection came free within WONDERQ_DB_POOL_TIMEOUT, `code` busy) or the"
    " connection to it was lost (a restart or failover, `code` unavailable); see Retry-After.",
}

# Refused by the HTTP server (gunicorn, as `serve` runs it) before Django sees the request: a short HTML page.
_HTTP_SERVER_LIMITS = {
    "414": "Request line (method, path and query string) longer than the HTTP server accepts (4094 bytes).",
    "431": "Request header fields larger than the HTTP server accepts (8190 bytes a field, 100 fields).",
}

_COMPONENTS = "#/components/schemas/"
_RESULTS = f"{_COMPONENTS}ResultsOut"
_ITEM_RESULT = f"{_COMPONENTS}ItemResultOut"


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the shared error shapes."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    _document_send_batch(result)
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            _document_single_receipt(responses)
            for status, description in _ERRORS.items():
                if path.endswith("/health/") and status not in ("405", "406", "429"):
                    continue
                responses.setdefault(status, {"description": description, "content": error})
            for status, description in _HTTP_SERVER_LIMITS.items():
                responses.setdefault(status, {"description": description, "content": html})
            if path.endswith("/health/"):
                responses.setdefault("503", {"description": "The database does not answer.", "content": error})
    return result


def _document_send_batch(result: dict) -> None:
    """POST .../messages/ takes one message or a batch `{messages: [...]}` (views.QueueViewSet.send)."""
    schemas = result["components"]["schemas"]
    single = {"$ref": f"{_COMPONENTS}MessageInRequest"}
    for operations in result.get("paths", {}).values():
        body = operations.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
        if body.get("schema") == single:
            body["schema"] = {"oneOf": [single, {"$ref": f"{_COMPONENTS}SendBatchInRequest"}]}
            schemas["SendBatchInRequest"] = {
                "type": "object",
                "description": "A batch, stored all or nothing.",
                "properties": {
                    "messages": {"type": "array", "items": single, "minItems": 1, "maxItems": app_settings.MAX_BATCH}
                },
                "required": ["messages"],
                "additionalProperties": False,
            }


def _document_single_receipt(responses: dict) -> None:
    """ack / extend / release / reject: `{receipts}` answers `{results}`; one `{receipt}` answers its result alone."""
    ok = responses.get("200", {}).get("content", {}).get("application/json", {})
    if ok.get("schema") != {"$ref": _RESULTS}:
        return
    ok["schema"] = {"oneOf": [{"$ref": _RESULTS}, {"$ref": _ITEM_RESULT}]}
    responses["200"]["description"] = (
        "`{results: [...]}`, one per receipt, for `receipts`; for a single `receipt`, its result alone "
        "(a stale receipt answers 409 and an unknown one 404 instead)."
    )
