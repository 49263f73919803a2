"""One error shape for the API: DRF's, with a machine-readable `code` beside `detail`."""

from __future__ import annotations

import sys

import psycopg
from django.core.exceptions import RequestDataTooBig
from django.db import connections
from django.http import HttpResponse, JsonResponse
from django.views import defaults
from django_ratelimit.exceptions import Ratelimited
from psycopg_pool import PoolTimeout
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
    if response.status_code in (429, 503) and "Retry-After" not in response:
        response["Retry-After"] = "1"
    return response


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


# --- Django's own error views, for what never reaches DRF (an unknown /api/ path, a crash) ----------

_API_PREFIX = "/api/"
_DJANGO_ERRORS = {
    400: ("Bad request.", "bad_request", defaults.bad_request),
    403: ("Permission denied.", "permission_denied", defaults.permission_denied),
    404: ("Not found.", "not_found", defaults.page_not_found),
}


def _api_error(status_code: int):
    detail, code, html_view = _DJANGO_ERRORS[status_code]

    def view(request, exception):
        if request.path_info.startswith(_API_PREFIX):
            return JsonResponse({"detail": detail, "code": code}, status=status_code)
        return html_view(request, exception)

    view.__name__ = view.__qualname__ = f"api_error_{status_code}"
    view.__doc__ = f"{status_code} as the API's JSON `{{detail, code}}` under /api/, Django's page elsewhere."
    return view


bad_request = _api_error(400)
permission_denied = _api_error(403)
page_not_found = _api_error(404)


_RETRY_SAFELY = " The request was most likely not applied; a send retried with its dedup_id is never enqueued twice."
# SQLSTATEs of a server that ended the connection: shut down (a restart, pg_terminate_backend), crashed, starting.
_SERVER_WENT_AWAY = {"57P01", "57P02", "57P03"}


def _database_unavailable() -> tuple[str, str] | None:
    """(code, detail) when the error being handled is the database's unavailability rather than a fault here.

    - The pool's timeout: no connection came free in WONDERQ_DB_POOL_TIMEOUT. Nothing was changed.
    - A lost connection: PostgreSQL restarted, failed over or ended the session (SQLSTATE class 08,
      57P01-57P03, or any error that left the connection's socket closed). A pooled connection is checked before it is
      lent only after it sat unused (WONDERQ_DB_CHECK_AFTER_IDLE) or once the process has seen another
      one lost (wonderq_project.postgresql.base), so after a restart about one request per process meets
      it. Usually nothing was done; if the connection broke while a statement was committing, it may have been.
    """
    exc = sys.exc_info()[1]
    for error in (exc, getattr(exc, "__cause__", None)):
        if isinstance(error, PoolTimeout):
            return "busy", "The database is busy: no connection came free in time. Retry shortly."
        if isinstance(error, psycopg.OperationalError) and (
            (error.sqlstate or "").startswith("08") or error.sqlstate in _SERVER_WENT_AWAY or _connection_broken()
        ):
            return "unavailable", "The connection to the database was lost during this request. Retry shortly."
    return None


def _connection_broken() -> bool:
    """Whether a database connection this request used is broken (its socket closed), not merely in error."""
    return any(getattr(wrapper.connection, "broken", False) for wrapper in connections.all(initialized_only=True))


def server_error(request):
    """500 as JSON under /api/ (clients parse every answer as JSON), Django's page elsewhere.

    When the database is unavailable (its pool's timeout, a lost connection) the answer is 503 with
    Retry-After instead: the server is overloaded or its database restarting, not broken.
    """
    if unavailable := _database_unavailable():
        code, detail = unavailable
        if request.path_info.startswith(_API_PREFIX):
            if code == "unavailable":
                detail += _RETRY_SAFELY
            response = JsonResponse({"detail": detail, "code": code}, status=503)
        else:
            response = HttpResponse(detail, content_type="text/plain", status=503)
        response["Retry-After"] = "1"
        return response
    if request.path_info.startswith(_API_PREFIX):
        return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)
    return defaults.server_error(request)


class LengthRequiredMiddleware:
    """411 for a request whose body comes without Content-Length (`Transfer-Encoding: chunked`).

    Django reads such a body as empty: a receive would lease with every parameter dropped and an
    invalid body would pass as `{}`. Refusing it first means nothing is read or changed.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "HTTP_TRANSFER_ENCODING" not in request.META:
            return self.get_response(request)
        detail = "Send the body with a Content-Length header; chunked transfer encoding is not supported."
        if request.path_info.startswith(_API_PREFIX):
            return JsonResponse({"detail": detail, "code": "length_required"}, status=411)
        return HttpResponse(detail, content_type="text/plain", status=411)
