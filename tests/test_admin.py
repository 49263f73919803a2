"""The operators' admin: review items, the decision log, queues, messages and tokens, through the test client.

Every bulk action is checked twice: the first POST only shows a confirmation page and
changes nothing; the confirmed POST (`post=yes`) moves what is still legal and reports a count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queues import services
from queues.bench.data import expired_leases_create
from queues.models import ApiToken, Delivery, Message, Queue, ReviewDecision
from tests.factories import MessageFactory, QueueFactory, UserFactory

pytestmark = pytest.mark.django_db

REVIEW_URL = "/admin/queues/reviewitem/"
DECISIONS_URL = "/admin/queues/reviewdecision/"
QUEUES_URL = "/admin/queues/queue/"
MESSAGES_URL = "/admin/queues/message/"
TOKENS_URL = "/admin/queues/apitoken/"
PASSWORD = "correct horse battery staple"  # what UserFactory gives every user


# --- helpers ---------------------------------------------------------------------------


def in_review(queue: Queue, count: int, *, consumer: str = "worker-1", user=None, body=None) -> list[int]:
    """`count` messages received an hour ago whose leases the sweep has moved to review."""
    past = timezone.now() - dt.timedelta(hours=1)
    if body is None:
        MessageFactory.create_batch(count, queue=queue, sent_at=past)
    else:
        MessageFactory.create_batch(count, queue=queue, sent_at=past, body=body)
    leased = services.message_receive(queue=queue, user=user, consumer=consumer, max_messages=count, now=past)
    assert len(leased) == count
    services.leases_sweep()
    ids = [row["id"] for row in leased]
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {"review"}
    return ids


def texts(response) -> list[str]:
    """The messages the admin queued for the operator during this request."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def act(client, url: str, action: str, ids, *, confirm: bool, **data):
    """POST a bulk action as the changelist does; `confirm` adds post=yes as the confirmation page does."""
    payload = {"action": action, ACTION_CHECKBOX_NAME: [str(i) for i in ids], **data}
    if confirm:
        payload["post"] = "yes"
    return client.post(url, payload)


def statuses(ids) -> dict[int, str]:
    return dict(Message.objects.filter(id__in=ids).values_list("id", "status"))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Every factory user gets a hashed password; the default hasher costs most of this module's run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(db):
    return UserFactory(staff=True, username="olga")


@pytest.fixture
def admin_client(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def worker(db):
    return UserFactory(username="billing-bot")


@pytest.fixture
def jobs(db):
    return QueueFactory(name="jobs")


# --- review items: list and detail -------------------------------------------------------


def test_review_changelist__shows_items_with_consumer_and_user(admin_client, jobs, worker):
    ids = in_review(jobs, 2, consumer="mailer-7", user=worker)
    MessageFactory(queue=jobs, body="still ready, not for review")

    response = admin_client.get(REVIEW_URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert "mailer-7" in page and "billing-bot" in page and "Lease timed out" in page
    assert "still ready" not in page
    assert {item.pk for item in response.context["cl"].result_list} == set(ids)


def test_review_changelist__lists_a_lease_run_out_since_the_last_sweep(admin_client, jobs, worker):
    past = timezone.now() - dt.timedelta(hours=1)
    [message] = MessageFactory.create_batch(1, queue=jobs, sent_at=past)
    services.message_receive(queue=jobs, consumer="slow", user=worker, max_messages=1, now=past)  # never swept

    response = admin_client.get(REVIEW_URL)

    assert [item.pk for item in response.context["cl"].result_list] == [message.pk]
    assert "slow" in response.content.decode()


def test_review_changelist__search_by_id_and_body_and_filter_by_consumer(admin_client, jobs):
    [first] = in_review(jobs, 1, consumer="a", body="invoice failed")
    [second] = in_review(jobs, 1, consumer="b", body="receipt sent")

    def listed(query):
        response = admin_client.get(REVIEW_URL, query)
        assert response.status_code == 200
        return {item.pk for item in response.context["cl"].result_list}

    assert listed({"q": "invoice"}) == {first}
    assert listed({"q": str(second)}) == {second}
    assert listed({"consumer": "b"}) == {second}
    assert listed({"queue__id__exact": jobs.pk, "review_reason": "timeout"}) == {first, second}


def test_review_changelist__query_count_does_not_grow_with_items(admin_client, jobs, worker):
    in_review(jobs, 2, user=worker)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(REVIEW_URL).status_code == 200
    in_review(QueueFactory(name="other"), 20, user=UserFactory(), consumer="other-worker")
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(REVIEW_URL)
    assert len(response.context["cl"].result_list) == 22
    # One more: the queue filter appears once a second queue has review items.
    assert len(many.captured_queries) <= len(few.captured_queries) + 1


def test_review_detail__shows_pretty_escaped_body_attributes_and_history(admin_client, jobs, worker):
    body = json.dumps({"to": "<script>alert(1)</script>", "n": 1})
    message = MessageFactory(queue=jobs, body=body, attributes={"kind": "welcome"})
    # First delivery released, second rejected: two rows of history, review reason "rejected".
    [lease] = services.message_receive(queue=jobs, user=worker, consumer="mailer-1")
    services.message_release(queue=jobs, receipts=[lease["receipt"]])
    [lease] = services.message_receive(queue=jobs, user=worker, consumer="mailer-2")
    services.message_reject(queue=jobs, receipts=[lease["receipt"]], reason="bad address")

    response = admin_client.get(f"{REVIEW_URL}{message.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "<script>alert" not in page
    assert "&quot;to&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;,\n  &quot;n&quot;: 1" in page
    assert "&quot;kind&quot;: &quot;welcome&quot;" in page
    assert "bad address" in page and "Rejected by consumer" in page
    history = page[page.index("wq-delivery-history") :]
    assert history.index("mailer-1") < history.index("Released by consumer") < history.index("mailer-2")
    assert "billing-bot" in history
    assert Delivery.objects.filter(message_id=message.pk).count() == 2
    # Read-only: no save button, and a POST to the change page is refused.
    assert 'name="_save"' not in page
    assert admin_client.post(f"{REVIEW_URL}{message.pk}/change/", {"body": "x"}).status_code == 403
    assert Message.objects.get(pk=message.pk).body == body


def test_review_detail__history_shows_the_timeout_the_message_row_still_holds(admin_client, jobs, worker):
    """The sweep leaves a timed-out delivery on the message row; the page shows it after the earlier ones."""
    [message_id] = in_review(jobs, 1, consumer="mailer-1", user=worker)
    past = timezone.now() - dt.timedelta(minutes=30)
    # Requeued: its first delivery becomes a row.
    services.review_requeue(queue=jobs, ids=[message_id], actor="op", now=past - dt.timedelta(minutes=1))
    assert services.message_receive(queue=jobs, consumer="mailer-2", user=worker, now=past)[0]["id"] == message_id
    services.leases_sweep()
    assert list(Delivery.objects.values_list("attempt", flat=True)) == [1]

    page = admin_client.get(f"{REVIEW_URL}{message_id}/change/").content.decode()

    history = page[page.index("wq-delivery-history") :]
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", history)
    assert rows == [("1", "mailer-1", worker.username), ("2", "mailer-2", worker.username)]
    assert history.count("Lease expired") == 2


def test_review_admin__no_add_and_no_delete(admin_client, jobs):
    [item] = in_review(jobs, 1)
    assert admin_client.get(f"{REVIEW_URL}add/").status_code == 403
    assert admin_client.post(f"{REVIEW_URL}{item}/delete/", {"post": "yes"}).status_code == 403
    assert statuses([item]) == {item: "review"}


# --- review items: actions ---------------------------------------------------------------


@pytest.mark.parametrize("action", ["requeue", "requeue_later", "discard"])
def test_review_action__first_post_shows_confirmation_and_changes_nothing(admin_client, jobs, action):
    ids = in_review(jobs, 3)

    response = act(admin_client, REVIEW_URL, action, ids, confirm=False)

    assert response.status_code == 200
    assert "admin/queues/reviewitem/action_confirmation.html" in [t.name for t in response.templates]
    page = response.content.decode()
    # The listed ids go back in one field: a "select all" of over 1,000 would exceed Django's field limit.
    [confirmed] = re.findall(r'name="wq_confirmed_ids" value="([0-9,]*)"', page)
    assert sorted(map(int, confirmed.split(","))) == sorted(ids)
    assert f'name="{ACTION_CHECKBOX_NAME}"' not in page
    assert 'name="post" value="yes"' in page and f'name="action" value="{action}"' in page
    assert 'name="note"' in page
    assert ('name="delay_seconds"' in page) == (action == "requeue_later")
    assert statuses(ids) == dict.fromkeys(ids, "review")
    assert not ReviewDecision.objects.exists()


def test_requeue__select_all_of_over_a_thousand_confirms_through_the_page(admin_client, jobs):
    """The confirmation page once posted an input per item: over 1,000, Django refused the form (400)."""
    ids = in_review(jobs, 1200)
    first = admin_client.post(
        REVIEW_URL, {"action": "requeue", "select_across": "1", "index": "0", ACTION_CHECKBOX_NAME: ids[:100]}
    )
    page = first.content.decode()
    assert page.count("Requeue") >= 1 and statuses(ids) == dict.fromkeys(ids, "review")

    # The second POST carries what the page's form holds.
    [confirmed] = re.findall(r'name="wq_confirmed_ids" value="([0-9,]*)"', page)
    confirm = {"action": "requeue", "post": "yes", "note": "", "wq_confirmed_ids": confirmed}
    response = admin_client.post(REVIEW_URL, confirm)

    assert response.status_code == 302
    assert texts(response) == ["Requeued 1200 messages."]
    assert statuses(ids) == dict.fromkeys(ids, "ready")
    assert ReviewDecision.objects.count() == 1200


def test_review_changelist__a_user_who_may_not_see_it_moves_nothing(jobs):
    """The list takes in run-out leases first (rule 2), but not for a request it refuses."""
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory(queue=jobs, sent_at=past)
    services.message_receive(queue=jobs, now=past)  # run out, not swept
    client = Client()
    client.force_login(UserFactory(is_staff=True, username="intern"))  # staff, no permissions

    assert client.get(REVIEW_URL).status_code == 403
    assert Message.objects.get().status == "leased"


def test_message_list__a_lease_run_out_since_the_last_sweep_is_listed_where_the_counts_put_it(admin_client, jobs):
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory(queue=jobs, sent_at=past)
    [leased] = services.message_receive(queue=jobs, now=past)  # run out, not swept: the counts say review
    assert services.queue_counts(queue_ids=[jobs.id], now=timezone.now())[jobs.id]["review"] == 1

    in_review = admin_client.get(MESSAGES_URL, {"status": "review"}).context["cl"].result_list
    still_leased = admin_client.get(MESSAGES_URL, {"status": "leased"}).context["cl"].result_list

    assert [m.pk for m in in_review] == [leased["id"]] and list(still_leased) == []


def test_review_item_page__a_lease_run_out_since_the_last_sweep_is_shown(admin_client, jobs):
    """Its list shows it (rule 2); its page once answered that it did not exist."""
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory(queue=jobs, sent_at=past, body="late one")
    [leased] = services.message_receive(queue=jobs, consumer="slow", now=past)

    response = admin_client.get(f"{REVIEW_URL}{leased['id']}/change/")

    assert response.status_code == 200 and "late one" in response.content.decode()
    assert Message.objects.get().status == "review"


def test_requeue__confirmed_moves_to_ready_logs_and_reports(admin_client, staff, jobs):
    ids = in_review(jobs, 3)

    response = act(admin_client, REVIEW_URL, "requeue", ids, confirm=True, note="fixed the mailer")

    assert response.status_code == 302
    assert texts(response) == ["Requeued 3 messages."]
    assert statuses(ids) == dict.fromkeys(ids, "ready")
    decisions = ReviewDecision.objects.filter(message_id__in=ids)
    assert decisions.count() == 3
    assert {(d.action, d.operator_id, d.actor, d.note, d.delay_seconds) for d in decisions} == {
        ("requeued", staff.pk, "olga", "fixed the mailer", 0)
    }
    assert LogEntry.objects.filter(user=staff, object_id__in=[str(i) for i in ids]).count() == 3


def test_requeue_later__confirmed_delays_the_messages(admin_client, jobs):
    ids = in_review(jobs, 2)
    before = timezone.now()

    response = act(admin_client, REVIEW_URL, "requeue_later", ids, confirm=True, delay_seconds="120")

    assert response.status_code == 302
    assert texts(response) == ["Requeued 2 messages, receivable again in 120 seconds."]
    for message in Message.objects.filter(id__in=ids):
        assert message.status == "ready"
        assert message.available_at >= before + dt.timedelta(seconds=120)
    assert set(ReviewDecision.objects.values_list("delay_seconds", flat=True)) == {120}


@pytest.mark.parametrize("delay", ["901", "-1", "soon", ""])
def test_requeue_later__invalid_delay_shows_the_page_again_and_changes_nothing(admin_client, jobs, delay):
    ids = in_review(jobs, 2)

    response = act(admin_client, REVIEW_URL, "requeue_later", ids, confirm=True, delay_seconds=delay)

    assert response.status_code == 200
    assert response.context["form"].errors["delay_seconds"]
    assert statuses(ids) == dict.fromkeys(ids, "review")
    assert not ReviewDecision.objects.exists()


def test_discard__confirmed_deletes_and_keeps_the_decision(admin_client, staff, jobs):
    ids = in_review(jobs, 2)

    response = act(admin_client, REVIEW_URL, "discard", ids, confirm=True, note="poison")

    assert response.status_code == 302
    assert texts(response) == ["Discarded 2 messages."]
    assert not Message.objects.filter(id__in=ids).exists()
    assert sorted(ReviewDecision.objects.values_list("message_id", "action", "note", "operator")) == [
        (message_id, "discarded", "poison", staff.pk) for message_id in sorted(ids)
    ]


def test_review_action__spans_queues_with_one_call_per_queue(admin_client):
    first, second = QueueFactory(name="a"), QueueFactory(name="b")
    ids = in_review(first, 2) + in_review(second, 3)

    response = act(admin_client, REVIEW_URL, "requeue", ids, confirm=True)

    assert texts(response) == ["Requeued 5 messages."]
    assert sorted(ReviewDecision.objects.values_list("queue_name", flat=True)) == ["a", "a", "b", "b", "b"]


def test_review_action__skips_items_no_longer_in_review(admin_client, jobs, worker):
    ids = in_review(jobs, 4)
    # Between the operator's choice and the confirmation, one is discarded by someone else ...
    services.review_discard(queue=jobs, ids=ids[:1], actor="someone else")
    confirmation = act(admin_client, REVIEW_URL, "requeue", ids, confirm=False)
    assert "1 was no longer in review. It will be skipped." in confirmation.content.decode()
    assert f'value="{ids[0]}"' not in confirmation.content.decode()
    # ... and between confirmation page and confirmation, two more are requeued elsewhere.
    services.review_requeue(queue=jobs, ids=ids[1:3], actor="someone else")

    response = act(admin_client, REVIEW_URL, "requeue", ids[1:], confirm=True)

    assert texts(response) == ["Requeued 1 message.", "2 were no longer in review."]
    assert ReviewDecision.objects.filter(actor="olga").count() == 1
    assert ReviewDecision.objects.filter(message_id=ids[1], action="requeued").count() == 1


def test_review_action__nothing_left_in_review_reports_and_shows_no_page(admin_client, jobs):
    ids = in_review(jobs, 2)
    services.review_requeue(queue=jobs, ids=ids, actor="someone else")

    response = act(admin_client, REVIEW_URL, "discard", ids, confirm=False)

    assert response.status_code == 302
    assert texts(response) == ["2 were no longer in review."]
    assert statuses(ids) == dict.fromkeys(ids, "ready")


def test_review_change_page__buttons_go_through_the_same_confirmation(admin_client, jobs):
    [item, other] = in_review(jobs, 2)
    page = admin_client.get(f"{REVIEW_URL}{item}/change/").content.decode()
    buttons = re.findall(r'<form method="post" action="([^"]+)" class="wq-review-button">(.*?)</form>', page, re.S)
    assert [re.search(r'name="action" value="(\w+)"', body)[1] for _, body in buttons] == [
        "requeue",
        "requeue_later",
        "discard",
    ]
    action_url, body = buttons[2]
    assert action_url == REVIEW_URL and f'name="{ACTION_CHECKBOX_NAME}" value="{item}"' in body

    confirmation = admin_client.post(action_url, {"action": "discard", ACTION_CHECKBOX_NAME: str(item)})
    assert confirmation.status_code == 200 and "Yes, discard them" in confirmation.content.decode()
    assert statuses([item]) == {item: "review"}

    done = act(admin_client, action_url, "discard", [item], confirm=True)
    assert texts(done) == ["Discarded 1 message."]
    assert statuses([item, other]) == {other: "review"}


# --- access --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [REVIEW_URL, DECISIONS_URL, QUEUES_URL, MESSAGES_URL, TOKENS_URL])
def test_admin__non_staff_is_sent_to_login(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin__non_staff_post_changes_nothing(client, user, jobs):
    ids = in_review(jobs, 2)
    client.force_login(user)

    response = act(client, REVIEW_URL, "requeue", ids, confirm=True)

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert statuses(ids) == dict.fromkeys(ids, "review")
    assert not ReviewDecision.objects.exists()


def test_admin__login_form_then_review_list(staff, jobs):
    in_review(jobs, 1, consumer="mailer-9")
    client = Client(enforce_csrf_checks=True)
    login_page = client.get("/admin/login/")
    token = login_page.cookies["csrftoken"].value

    response = client.post(
        "/admin/login/",
        {"username": "olga", "password": PASSWORD, "next": REVIEW_URL, "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302 and response["Location"] == REVIEW_URL
    assert "mailer-9" in client.get(REVIEW_URL).content.decode()


def test_admin__csrf_is_enforced_on_actions(staff, jobs):
    ids = in_review(jobs, 2)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    refused = act(client, REVIEW_URL, "requeue", ids, confirm=True)

    assert refused.status_code == 403
    assert statuses(ids) == dict.fromkeys(ids, "review")
    assert not ReviewDecision.objects.exists()
    # With the token the changelist hands out, the same POST goes through.
    token = client.get(REVIEW_URL).cookies["csrftoken"].value
    accepted = act(client, REVIEW_URL, "requeue", ids, confirm=True, csrfmiddlewaretoken=token)
    assert accepted.status_code == 302
    assert statuses(ids) == dict.fromkeys(ids, "ready")


# --- decision log ---------------------------------------------------------------------------


def test_decision_log__lists_searches_filters_and_is_read_only(admin_client, jobs):
    ids = in_review(jobs, 3)
    services.review_requeue(queue=jobs, ids=ids[:2], actor="alice", note="after the deploy")
    services.review_discard(queue=jobs, ids=ids[2:], actor="bob", note="junk")
    decision = ReviewDecision.objects.get(message_id=ids[2])

    def listed(query):
        response = admin_client.get(DECISIONS_URL, query)
        assert response.status_code == 200
        return sorted(d.message_id for d in response.context["cl"].result_list)

    assert listed({}) == sorted(ids)
    assert listed({"action__exact": "discarded"}) == [ids[2]]
    assert listed({"queue_name": "jobs"}) == sorted(ids)
    assert listed({"q": str(ids[0])}) == [ids[0]]
    assert listed({"q": "the deploy"}) == sorted(ids[:2])
    assert listed({"q": "bob"}) == [ids[2]]

    assert admin_client.get(f"{DECISIONS_URL}add/").status_code == 403
    view = admin_client.get(f"{DECISIONS_URL}{decision.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert admin_client.post(f"{DECISIONS_URL}{decision.pk}/change/", {"note": "edited"}).status_code == 403
    assert admin_client.post(f"{DECISIONS_URL}{decision.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = act(admin_client, DECISIONS_URL, "delete_selected", [decision.pk], confirm=True)
    assert bulk.status_code == 200 and bulk.context["action_form"] is None  # no actions at all: just the list
    assert ReviewDecision.objects.get(pk=decision.pk).note == "junk"


# --- queues and messages ------------------------------------------------------------------------


def _fill(queue: Queue, *, ready: int, leased: int, review: int) -> None:
    if review:
        in_review(queue, review)
    MessageFactory.create_batch(ready + leased, queue=queue)
    if leased:
        services.message_receive(queue=queue, max_messages=leased)


def test_queue_changelist__live_counts_with_one_query_for_the_page(admin_client):
    _fill(QueueFactory(name="alpha"), ready=3, leased=2, review=1)
    _fill(QueueFactory(name="beta"), ready=0, leased=0, review=4)

    with CaptureQueriesContext(connection) as two:
        response = admin_client.get(QUEUES_URL)
    counts = {q.name: q.live_counts for q in response.context["cl"].result_list}
    assert {name: (c["ready"], c["leased"], c["review"]) for name, c in counts.items()} == {
        "alpha": (3, 2, 1),
        "beta": (0, 0, 4),
    }

    for n in range(4):
        _fill(QueueFactory(name=f"more-{n}"), ready=1, leased=1, review=1)
    with CaptureQueriesContext(connection) as six:
        response = admin_client.get(QUEUES_URL)
    assert len(response.context["cl"].result_list) == 6
    assert len(six.captured_queries) == len(two.captured_queries)
    counting = [q["sql"] for q in six.captured_queries if "queues_message" in q["sql"]]
    assert len(counting) == 1


def test_queue_purge__confirms_then_deletes_ready_only(admin_client, staff, jobs):
    _fill(jobs, ready=3, leased=1, review=1)
    other = QueueFactory(name="untouched")
    _fill(other, ready=2, leased=0, review=0)

    confirmation = act(admin_client, QUEUES_URL, "purge_ready", [jobs.pk], confirm=False)
    assert confirmation.status_code == 200
    assert "jobs — 3 ready" in confirmation.content.decode()
    assert Message.objects.filter(queue=jobs, status="ready").count() == 3

    response = act(admin_client, QUEUES_URL, "purge_ready", [jobs.pk], confirm=True)

    assert texts(response) == ["Purged 3 ready messages from 1 queue(s)."]
    assert sorted(Message.objects.filter(queue=jobs).values_list("status", flat=True)) == ["leased", "review"]
    assert Message.objects.filter(queue=other, status="ready").count() == 2


def test_queue_add__through_the_service_with_a_grant(admin_client, staff, worker):
    response = admin_client.post(
        f"{QUEUES_URL}add/",
        {
            "name": "emails",
            "owner": staff.pk,
            "visibility_timeout": 45,
            "on_timeout": "review",
            "max_receives": 5,
            "delay_seconds": 0,
            "max_message_bytes": 1024,
            "grants-TOTAL_FORMS": 1,
            "grants-INITIAL_FORMS": 0,
            "grants-0-user": worker.pk,
            "grants-0-can_send": "on",
        },
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    queue = Queue.objects.get(name="emails")
    assert (queue.owner, queue.visibility_timeout, queue.max_message_bytes) == (staff, 45, 1024)
    assert list(queue.grants.values_list("user", "can_send", "can_receive")) == [(worker.pk, True, False)]


def test_message_admin__live_messages_only_and_read_only(admin_client, jobs):
    ready, acked = MessageFactory.create_batch(2, queue=jobs)
    [lease] = services.message_receive(queue=jobs, max_messages=1)
    assert lease["id"] == ready.pk
    [done] = services.message_receive(queue=jobs, max_messages=1)
    services.message_ack(queue=jobs, receipts=[done["receipt"]])
    assert Message.objects.get(pk=acked.pk).status == "acked"

    response = admin_client.get(MESSAGES_URL)
    assert {m.pk for m in response.context["cl"].result_list} == {ready.pk}
    assert admin_client.get(MESSAGES_URL, {"status": "leased"}).status_code == 200
    assert admin_client.get(f"{MESSAGES_URL}{acked.pk}/change/").status_code == 302  # not found: back to the list
    assert admin_client.get(f"{MESSAGES_URL}add/").status_code == 403
    view = admin_client.get(f"{MESSAGES_URL}{ready.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    refused = admin_client.post(f"{MESSAGES_URL}{ready.pk}/change/", {"status": "ready", "lease_expires_at": ""})
    assert refused.status_code == 403
    assert Message.objects.get(pk=ready.pk).status == "leased"


def test_message_admin__list_by_queue_reads_the_status_indexes(admin_client, jobs):
    """Messages have no index on the queue alone: the list filtered by queue must read the
    partial indexes of its live statuses, not every row of the table."""
    expired_leases_create(queue=QueueFactory(name="other"), count=20_000, expired_at=timezone.now())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Message._meta.db_table}")
    mine = MessageFactory.create_batch(3, queue=jobs)
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        response = admin_client.get(MESSAGES_URL, {"queue__id__exact": jobs.pk})
    assert {m.pk for m in response.context["cl"].result_list} == {m.pk for m in mine}
    [(sql, params)] = [(sql, params) for sql, params in statements if "COUNT(*)" in sql and "queues_message" in sql]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan, plan
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(row[-1] for row in cursor.fetchall())
            assert "SCAN queues_message" not in plan, plan
    for index in ("message_ready_idx", "message_leased_idx", "message_review_idx"):
        assert index in plan, plan


# --- API tokens -------------------------------------------------------------------------------------


def test_token_add__shows_the_key_once_and_stores_only_its_digest(admin_client, worker):
    response = admin_client.post(f"{TOKENS_URL}add/", {"user": worker.pk, "name": "billing"}, follow=True)

    assert response.status_code == 200
    [key] = re.findall(r"wq_[A-Za-z0-9_-]{43}", response.content.decode())
    token = ApiToken.objects.get(name="billing")
    assert token.user == worker and token.key_prefix == key[:9]
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() != key
    assert services.token_authenticate(key=key) == token
    # Once: not on the next page, not on the token's own page, nowhere in the admin's history.
    assert key not in admin_client.get(TOKENS_URL).content.decode()
    detail = admin_client.get(f"{TOKENS_URL}{token.pk}/change/").content.decode()
    assert key not in detail and token.digest not in detail and token.key_prefix in detail
    assert not any(key in entry.change_message for entry in LogEntry.objects.all())


def test_token_admin__digest_never_shown_and_tokens_read_only(admin_client, worker):
    token, _ = services.token_create(user=worker, name="ci")
    listing = admin_client.get(TOKENS_URL).content.decode()
    assert token.digest not in listing and "ci" in listing
    refused = admin_client.post(f"{TOKENS_URL}{token.pk}/change/", {"name": "renamed", "user": worker.pk})
    assert refused.status_code == 403
    assert ApiToken.objects.get(pk=token.pk).name == "ci"


def test_token_revoke__confirms_then_revokes_active_only(admin_client, worker):
    active, _ = services.token_create(user=worker, name="a")
    revoked, _ = services.token_create(user=worker, name="b")
    services.token_revoke(token=revoked)
    was_revoked_at = ApiToken.objects.get(pk=revoked.pk).revoked_at

    confirmation = act(admin_client, TOKENS_URL, "revoke", [active.pk, revoked.pk], confirm=False)
    assert confirmation.status_code == 200
    assert "1 was already revoked. It will be skipped." in confirmation.content.decode()
    assert ApiToken.objects.get(pk=active.pk).revoked_at is None

    response = act(admin_client, TOKENS_URL, "revoke", [active.pk, revoked.pk], confirm=True)

    assert texts(response) == ["Revoked 1 token.", "1 was already revoked."]
    assert ApiToken.objects.get(pk=active.pk).revoked_at is not None
    assert ApiToken.objects.get(pk=revoked.pk).revoked_at == was_revoked_at


# --- two operators at once ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_requeue__two_operators_at_once_requeue_each_item_once(monkeypatch):
    queue = QueueFactory(name="contended")
    ids = in_review(queue, 50)
    clients = []
    for name in ("op-a", "op-b"):
        client = Client()
        client.force_login(UserFactory(staff=True, username=name))
        clients.append(client)
    # Hold both requests until each has loaded all 50 items as "in review" and is about to call
    # the service: only the service's guarded UPDATE can then keep an item from moving twice.
    both_inside = threading.Barrier(len(clients))
    review_requeue = services.review_requeue

    def requeue_when_both_inside(**kwargs):
        both_inside.wait(timeout=30)
        return review_requeue(**kwargs)

    monkeypatch.setattr(services, "review_requeue", requeue_when_both_inside)
    reports: list[list[str]] = []
    errors: list[BaseException] = []

    def operate(client):
        try:
            response = act(client, REVIEW_URL, "requeue", ids, confirm=True)
            assert response.status_code == 302
            reports.append(texts(response))
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=operate, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert ReviewDecision.objects.filter(action="requeued").count() == 50
    assert sorted(ReviewDecision.objects.values_list("message_id", flat=True)) == sorted(ids)
    assert set(ReviewDecision.objects.values_list("actor", flat=True)) <= {"op-a", "op-b"}
    assert statuses(ids) == dict.fromkeys(ids, "ready")

    def count(pattern, report):
        found = [re.match(pattern, text) for text in report]
        return sum(int(match[1]) for match in found if match)

    requeued = [count(r"Requeued (\d+) message", report) for report in reports]
    skipped = [count(r"(\d+) (?:was|were) no longer in review", report) for report in reports]
    assert sum(requeued) == 50
    assert [r + s for r, s in zip(requeued, skipped, strict=True)] == [50, 50]
