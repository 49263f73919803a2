"""OpenAPI post-processing: document the error answers every operation can give.

DRF raises these from shared machinery (authentication, parsing, throttling,
validation), so they are added here once rather than on every view.
"""

from __future__ import annotations

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
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the shared error shapes."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in _ERRORS.items():
                if path.endswith("/health/") and status not in ("405", "406", "429"):
                    continue
                responses.setdefault(status, {"description": description, "content": error})
            if path.endswith("/health/"):
                responses.setdefault("503", {"description": "The database does not answer.", "content": error})
    return result
