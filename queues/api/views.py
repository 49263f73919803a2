"""The v1 HTTP API: thin shells over `queues.services`."""

from __future__ import annotations

import datetime as dt
import re
import time

from django.db import IntegrityError, connection
from django.db.models import Prefetch
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from queues import services
from queues.api import fastpath
from queues.api import serializers as s
from queues.api.errors import Conflict
from queues.conf import app_settings
from queues.models import QUEUE_NAME_PATTERN, Delivery, Message, Queue, ReviewItem

_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)
SEND, RECEIVE, MANAGE = "send", "receive", "manage"
_VERBS = {SEND: "send to", RECEIVE: "receive from", MANAGE: "manage"}
# Single-receipt calls answer with a status code; batch calls with one result per item.
_SINGLE_STATUS = {services.STALE: status.HTTP_409_CONFLICT, services.NOT_FOUND: status.HTTP_404_NOT_FOUND}


class _GrantRefused(APIException):
    """400 `{detail, code}` for a well-formed grant the rules refuse."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_grant"


_GRANT_ERRORS = {
    services.UserNotFound: NotFound,
    services.GrantNotFound: NotFound,
    services.GrantToOwner: _GrantRefused,
    services.EmptyGrant: _GrantRefused,
    services.OwnGrant: PermissionDenied,
}


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse({"$ref": "#/components/schemas/Error"}, description=description)


_GRANT_403 = _error("The token may see the queue but not manage it (`permission_denied`).")
_GRANT_404 = _error(
    "No such queue or one this token may not see (`not_found`), no user by that name (`user_not_found`), "
    "or that user has no grant on the queue (`grant_not_found`)."
)
_USERNAME = OpenApiParameter("username", str, OpenApiParameter.PATH, description="The grantee's username.")


class ReviewPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _iso(value) -> str:
    """An aware datetime as DRF's DateTimeField writes it with TIME_ZONE UTC: ISO 8601 with "Z"."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


def _while_queue_exists(call, *args, **kwargs):
    """Run a write that refers to kwargs["queue"]; if it was deleted since it was looked up, 404 as usual."""
    try:
        return call(*args, **kwargs)
    except IntegrityError:
        if not Queue.objects.filter(pk=kwargs["queue"].pk).exists():
            raise NotFound("Queue not found.") from None
        raise


def _valid(serializer_class, data, **context):
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _queue_out(queues: list[Queue]) -> list[dict]:
    counts = services.queue_counts(queue_ids=[q.id for q in queues], now=timezone.now())
    for queue in queues:
        queue.counts = counts[queue.id]
    return s.QueueOut(queues, many=True).data


# --- The answers of the hot calls, shared with queues.api.hotpath -------------------------------------


def send_answer(queue: Queue, messages: list[services.OutgoingMessage]) -> dict:
    """Store checked messages; the 201 body (SendOut)."""
    sent = _while_queue_exists(services.message_send, queue=queue, messages=messages)
    return {"ids": [m.id for m in sent], "messages": [{"id": m.id, "duplicate": m.duplicate} for m in sent]}


def _wait_without_connection(seconds: float) -> None:
    """Sleep between a long poll's tries with the database connection back in the pool.

    A long poll holds its request for up to MAX_WAIT_SECONDS, and a gevent worker serves more
    requests at once than its pool has connections: those that wait must not keep one.
    (SQLite's connection stays: closing it would checkpoint the WAL.)
    """
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        connection.close()
    time.sleep(seconds)


def receive_answer(queue: Queue, user, params: dict) -> dict:
    """Lease up to max_messages, polling until wait_seconds are up; the 200 body (ReceiveOut)."""
    deadline = time.monotonic() + params["wait_seconds"]
    while True:
        # Each try is its own short transaction; the wait happens outside any.
        messages = services.message_receive(
            queue=queue,
            user=user,
            consumer=params["consumer"],
            max_messages=params["max_messages"],
            visibility_timeout=params.get("visibility_timeout"),
        )
        remaining = deadline - time.monotonic()
        if messages or remaining <= 0:
            break
        _wait_without_connection(min(app_settings.POLL_INTERVAL, remaining))
    # The service's rows are already the documented shape (ReceiveOut). Timestamps are
    # written here as DRF's DateTimeField writes them, the lease's once for the batch.
    if messages:
        expires = _iso(messages[0]["lease_expires_at"])
        for message in messages:
            message["lease_expires_at"], message["sent_at"] = expires, _iso(message["sent_at"])
    return {"messages": messages}


def receipts_answer(queue: Queue, data: dict, service) -> tuple[int, dict]:
    """Apply `service` to checked `{receipt}` or `{receipts}` data; the status code and body."""
    single = "receipt" in data
    receipts = [data.pop("receipt")] if single else data.pop("receipts")
    # Results are plain dicts in ItemResultOut's shape.
    results = service(queue=queue, receipts=receipts, **data)
    if not single:
        return status.HTTP_200_OK, {"results": results}
    result = results[0]
    if result["status"] in _SINGLE_STATUS:
        detail = result.get("detail", "No message has this receipt.")
        return _SINGLE_STATUS[result["status"]], {"detail": detail, "code": result["status"]}
    return status.HTTP_200_OK, result


class QueueViewSet(viewsets.ViewSet):
    lookup_field = "name"
    # Any name reaches the view, which answers 404 as JSON for names that cannot exist.
    lookup_value_regex = "[^/]+"
    # Set per action (review); as_view() accepts only attributes the class has.
    pagination_class = None

    def get_queue(self, name: str, need: str | None = None) -> Queue:
        """The queue if this user may see it (else 404, as if it did not exist) and may do `need` (else 403)."""
        user = self.request.user
        # A name no queue can have is not looked up: truncating it could find another queue,
        # and PostgreSQL refuses NUL in a query (a 500).
        if not _QUEUE_NAME.fullmatch(name):
            raise NotFound("Queue not found.")
        queue, grant = services.queue_access(name=name, user_id=user.pk)
        if queue is None or user.is_staff or queue.owner_id == user.pk:
            if queue is None:
                raise NotFound("Queue not found.")
            return queue
        if grant is None:
            raise NotFound("Queue not found.")
        if need and not grant[need]:
            raise PermissionDenied(f"This token may not {_VERBS[need]} queue '{queue.name}'.")
        return queue

    @extend_schema(responses=s.QueueOut(many=True))
    def list(self, request):
        """The queues this token may see, with live counts."""
        queues = list(Queue.objects.visible_to(request.user).select_related("owner").order_by("name"))
        return Response(_queue_out(queues))

    @extend_schema(request=s.QueueCreateIn, responses={201: s.QueueOut})
    def create(self, request):
        """Create a queue owned by this token's user."""
        data = _valid(s.QueueCreateIn, request.data)
        try:
            queue = services.queue_create(owner=request.user, **data)
        except services.QueueExists:
            raise Conflict(f"A queue named '{data['name']}' already exists.", code="queue_exists") from None
        return Response(_queue_out([queue])[0], status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.QueueOut)
    def retrieve(self, request, name=None):
        """Settings and live counts of one queue."""
        return Response(_queue_out([self.get_queue(name)])[0])

    @extend_schema(request=s.QueueUpdateIn, responses=s.QueueOut)
    def partial_update(self, request, name=None):
        """Change a queue's settings."""
        queue = self.get_queue(name, MANAGE)
        data = _valid(s.QueueUpdateIn, request.data)
        try:
            services.queue_update(queue=queue, **data)
        except Queue.DoesNotExist:
            raise NotFound("Queue not found.") from None  # deleted since get_queue found it
        return Response(_queue_out([queue])[0])

    @extend_schema(responses={204: None})
    def destroy(self, request, name=None):
        """Delete a queue and every message in it. Takes no body: one other than `{}` answers 400."""
        queue = self.get_queue(name, MANAGE)
        _valid(s.NoBodyIn, request.data)
        services.queue_delete(queue=queue)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=s.MessageIn,
        responses={201: s.SendOut},
        description="Send one message `{body, attributes?, delay_seconds?, dedup_id?}` or a batch `{messages: [...]}`.",
    )
    @action(detail=True, methods=["post"], url_path="messages")
    def send(self, request, name=None):
        """Send one message or a batch."""
        queue = self.get_queue(name, SEND)
        messages = fastpath.send_messages(request.data, queue)
        if messages is None:
            if isinstance(request.data, dict) and "messages" in request.data:
                validated = _valid(s.SendBatchIn, request.data, queue=queue)["messages"]
            else:
                validated = [_valid(s.MessageIn, request.data, queue=queue)]
            messages = [services.OutgoingMessage(**message) for message in validated]
        return Response(send_answer(queue, messages), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ReceiveIn, responses=s.ReceiveOut)
    @action(detail=True, methods=["post"])
    def receive(self, request, name=None):
        """Lease up to max_messages; with wait_seconds, poll until one arrives or time is up."""
        queue = self.get_queue(name, RECEIVE)
        params = fastpath.receive_params(request.data) or _valid(s.ReceiveIn, request.data)
        return Response(receive_answer(queue, request.user, params))

    def _receipts_call(self, request, name, serializer_class, service, fast=None):
        queue = self.get_queue(name, RECEIVE)
        data = (fast and fast(request.data)) or _valid(serializer_class, request.data)
        code, body = receipts_answer(queue, data, service)
        return Response(body, status=code)

    @extend_schema(request=s.ReceiptsIn, responses=s.ResultsOut)
    @action(detail=True, methods=["post"])
    def ack(self, request, name=None):
        """Acknowledge: the message is done. Repeating an ack answers the same."""
        return self._receipts_call(request, name, s.ReceiptsIn, services.message_ack, fast=fastpath.ack_receipts)

    @extend_schema(request=s.ExtendIn, responses=s.ResultsOut)
    @action(detail=True, methods=["post"])
    def extend(self, request, name=None):
        """Extend live leases to now + visibility_timeout."""
        return self._receipts_call(request, name, s.ExtendIn, services.message_extend)

    @extend_schema(request=s.ReleaseIn, responses=s.ResultsOut)
    @action(detail=True, methods=["post"])
    def release(self, request, name=None):
        """Give live leases back: the messages are READY again (after delay_seconds)."""
        return self._receipts_call(request, name, s.ReleaseIn, services.message_release)

    @extend_schema(request=s.RejectIn, responses=s.ResultsOut)
    @action(detail=True, methods=["post"])
    def reject(self, request, name=None):
        """Send leased messages straight to review, with a reason."""
        return self._receipts_call(request, name, s.RejectIn, services.message_reject)

    @extend_schema(request=None, responses=s.PurgeOut)
    @action(detail=True, methods=["post"])
    def purge(self, request, name=None):
        """Delete every READY (and delayed) message. Takes no body: one other than `{}` answers 400."""
        queue = self.get_queue(name, MANAGE)
        _valid(s.NoBodyIn, request.data)
        return Response({"purged": services.queue_purge(queue=queue)})

    @extend_schema(
        parameters=[
            OpenApiParameter("reason", str, enum=[c for c, _ in Message.ReviewReason.choices]),
            OpenApiParameter("consumer", str),
        ],
        # With the action's pagination_class, drf-spectacular documents the page the paginator
        # answers ({count, next, previous, results}) and its page / page_size parameters.
        responses=s.ReviewItemOut(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=ReviewPagination)
    def review(self, request, name=None):
        """The messages waiting for a decision, newest first, a page at a time."""
        queue = self.get_queue(name, MANAGE)
        filters = _valid(s.ReviewListIn, request.query_params)
        # Leases that ran out since the last sweep are in review by time (rule 2): list them too.
        services.leases_sweep(queue_ids=[queue.id], max_batches=1)
        items = (
            ReviewItem.objects.filter(queue=queue, **filters)
            .select_related("leased_by")
            .prefetch_related(Prefetch("deliveries", Delivery.objects.select_related("leased_by")))
            .order_by("-review_at", "-id")
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(items, request, view=self)
        return paginator.get_paginated_response(s.ReviewItemOut(page, many=True).data)

    def _review_call(self, request, name, serializer_class, service, done: str):
        queue = self.get_queue(name, MANAGE)
        data = _valid(serializer_class, request.data)
        moved = set(service(queue=queue, operator=request.user, **data))
        results = [{"id": i, "status": done if i in moved else "not_found"} for i in dict.fromkeys(data["ids"])]
        return Response({"results": results})

    @extend_schema(request=s.ReviewRequeueIn, responses=s.ReviewResultsOut)
    @action(detail=True, methods=["post"], url_path="review/requeue")
    def review_requeue(self, request, name=None):
        """Put review items back in the queue (after delay_seconds)."""
        return self._review_call(request, name, s.ReviewRequeueIn, services.review_requeue, "requeued")

    @extend_schema(request=s.ReviewIdsIn, responses=s.ReviewResultsOut)
    @action(detail=True, methods=["post"], url_path="review/discard")
    def review_discard(self, request, name=None):
        """Delete review items; the decision is kept."""
        return self._review_call(request, name, s.ReviewIdsIn, services.review_discard, "discarded")

    # --- grants: owner, staff or a manage grant; every answer documented -----------------

    def _grant_answer(self, call, **kwargs):
        """Run a grant service, turning its refusals into 4xx answers that name the problem."""
        try:
            return call(**kwargs)
        except services.GrantError as exc:
            raise _GRANT_ERRORS[type(exc)](exc.message, code=exc.code) from None

    @extend_schema(
        responses={200: s.GrantOut(many=True), 403: _GRANT_403},
        description="The grants on this queue: who other than the owner may send, receive or manage it.",
    )
    @action(detail=True, methods=["get"], url_path="grants")
    def grants(self, request, name=None):
        """List a queue's grants (owner, staff or a manage grant)."""
        queue = self.get_queue(name, MANAGE)
        return Response(s.GrantOut(services.grant_list(queue=queue), many=True).data)

    @extend_schema(
        parameters=[_USERNAME],
        responses={200: s.GrantOut, 403: _GRANT_403, 404: _GRANT_404},
        description="One user's grant on this queue.",
    )
    @action(detail=True, methods=["get"], url_path=r"grants/(?P<username>[^/]+)")
    def grant(self, request, name=None, username=None):
        """Show one user's grant."""
        queue = self.get_queue(name, MANAGE)
        return Response(s.GrantOut(self._grant_answer(services.grant_get, queue=queue, username=username)).data)

    @extend_schema(
        parameters=[_USERNAME],
        request=s.GrantIn,
        responses={
            200: OpenApiResponse(s.GrantOut, description="The grant was replaced."),
            201: OpenApiResponse(s.GrantOut, description="The grant was created."),
            400: _error(
                "Malformed body (a field that is not a JSON boolean, an unknown field), a grant that allows "
                "nothing (`empty_grant`: DELETE it instead), or a grant to the queue's owner (`owner_grant`)."
            ),
            403: _error(
                "The token may see the queue but not manage it, or (`own_grant`) asks to widen its own grant: "
                "only the owner or staff may."
            ),
            404: _GRANT_404,
        },
        description=(
            "Create or replace a user's grant. The body is the whole grant: a permission left out is not "
            "granted. `manage` does not imply `send` or `receive`."
        ),
    )
    @grant.mapping.put
    def grant_put(self, request, name=None, username=None):
        """Create (201) or replace (200) one user's grant."""
        queue = self.get_queue(name, MANAGE)
        data = _valid(s.GrantIn, request.data)
        grant, created = _while_queue_exists(
            self._grant_answer, services.grant_set, queue=queue, username=username, actor=request.user, **data
        )
        return Response(s.GrantOut(grant).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        parameters=[_USERNAME],
        responses={204: None, 403: _GRANT_403, 404: _GRANT_404},
        description="Remove a user's grant: their next request no longer sees the queue."
        " Takes no body: one other than `{}` answers 400.",
    )
    @grant.mapping.delete
    def grant_delete(self, request, name=None, username=None):
        """Remove one user's grant."""
        queue = self.get_queue(name, MANAGE)
        _valid(s.NoBodyIn, request.data)
        self._grant_answer(services.grant_delete, queue=queue, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    # Load balancers poll it, often many behind one address: a 429 would read as "unhealthy".
    throttle_classes: list = []

    @extend_schema(
        responses={
            200: inline_serializer("Health", {"status": serializers.CharField()}),
            503: inline_serializer("Unhealthy", {"status": serializers.CharField()}),
        }
    )
    def get(self, request):
        """200 when the database answers, 503 when it does not."""
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:  # any database failure means "not healthy", never a 500
            return Response({"status": "unavailable"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"status": "ok"})


class _JsonErrors:
    """Errors in the API's JSON shape (`{detail, code}`), whatever format the page itself is in.

    The schema's renderers are YAML and JSON, the docs page's HTML: an error (a 405, or a 404 for
    an unknown `?format=`) would otherwise come in the format negotiated for the page.
    """

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaView(_JsonErrors, SpectacularAPIView):
    """The OpenAPI document (YAML by default, JSON with `?format=json`)."""


class DocsView(_JsonErrors, SpectacularSwaggerView):
    """The browsable page of the schema.

    OPTIONS answers with the allowed methods only: DRF would describe the view through the page's
    HTML renderer, which has no template for that (a 500).
    """

    def options(self, request, *args, **kwargs):
        return HttpResponse(headers={"Allow": ", ".join(self.allowed_methods)})
