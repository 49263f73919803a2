"""One error shape for the API: DRF's, with a machine-readable `code` beside `detail`."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django_ratelimit.exceptions import Ratelimited
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled
from rest_framework.views import exception_handler as drf_exception_handler

from queues.api.parsers import RequestTooLarge


def exception_handler(exc, context):
    if isinstance(exc, Ratelimited):
        # django-ratelimit raises a PermissionDenied; a client must see 429 and when to retry.
        exc = Throttled(wait=getattr(exc, "retry_after", None) or 1, detail="Rate limit exceeded.")
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(response.data, dict) and "detail" in response.data and "code" not in response.data:
        detail = response.data["detail"]
        response.data["code"] = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
    if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS and "Retry-After" not in response:
        response["Retry-After"] = "1"
    return response


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"
