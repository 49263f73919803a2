"""A queue deleted while a request that writes to it is under way: 404, never a 500.

The deletion happens for real, between the request's queue lookup and its write,
from an execute wrapper on the same connection (real commits, so the foreign key
is checked as in production).
"""

from __future__ import annotations

import pytest
from django.db import connection

from queues.models import Message, Queue, QueueGrant
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _delete_queue_after_lookup(queue_id: int):
    state = {"done": False}

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not state["done"] and "queues_queuegrant AS g" in sql:
            state["done"] = True
            Queue.objects.filter(pk=queue_id).delete()
        return result

    return wrapper


@pytest.mark.parametrize(
    "body",
    [
        {"body": "one"},
        {"messages": [{"body": "a"}, {"body": "b"}]},
        {"body": "deduplicated", "dedup_id": "d-1"},
    ],
    ids=["single", "batch", "dedup"],
)
def test_race__send_to_a_queue_deleted_meanwhile_404(api, user, body):
    queue = QueueFactory(owner=user, name="doomed")
    with connection.execute_wrapper(_delete_queue_after_lookup(queue.pk)):
        response = api.post("/api/v1/queues/doomed/messages/", body, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["detail"] == "Queue not found."
    assert not Message.objects.exists()


def test_race__grant_on_a_queue_deleted_meanwhile_404(api, user):
    queue = QueueFactory(owner=user, name="doomed")
    grantee = UserFactory(username="grantee")
    with connection.execute_wrapper(_delete_queue_after_lookup(queue.pk)):
        response = api.put(
            f"/api/v1/queues/doomed/grants/{grantee.username}/",
            {"send": True, "receive": False, "manage": False},
            format="json",
        )
    assert response.status_code == 404, response.content
    assert not QueueGrant.objects.exists()
