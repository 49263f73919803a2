"""The admin against malformed input: a bad search term, selected id or query-string lookup is
a 4xx (or Django's ?e=1 redirect) or ignored, never a 500, and changes nothing.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from django.test import Client

from queues import services
from queues.models import ApiToken, Message, Queue, QueueGrant, ReviewDecision
from tests.factories import MessageFactory, QueueFactory, UserFactory
from tests.test_admin import (
    DECISIONS_URL,
    MESSAGES_URL,
    QUEUES_URL,
    REVIEW_URL,
    TOKENS_URL,
    act,
    in_review,
    statuses,
    texts,
)

pytestmark = pytest.mark.django_db

NOTHING_SELECTED = "Items must be selected in order to perform actions on them. No items have been changed."
# Each of these reached the database as an id before the admin dropped it.
MALFORMED_IDS = ["abc", "99999999999999999999", "\x00", "²", "1.5", ""]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_client(db):
    client = Client()
    client.force_login(UserFactory(staff=True, username="olga"))
    return client


@pytest.fixture
def jobs(db):
    return QueueFactory(name="jobs")


@pytest.fixture
def everything(jobs):
    """A row for every changelist (and two queues, so that the queue filters show)."""
    ids = in_review(jobs, 3, body="area in m¹²")
    in_review(QueueFactory(name="other"), 1)
    services.review_requeue(queue=jobs, ids=ids[:1], actor="alice", note="m¹² fixed")
    services.token_create(user=UserFactory(username="billing-bot"), name="ci")
    return ids


def refused(response) -> bool:
    """Django's answers to a lookup it will not run: 400 (DisallowedModelAdminLookup) or back to ?e=1."""
    return response.status_code == 400 or (response.status_code == 302 and response["Location"].endswith("?e=1"))


# --- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["²", "¹²", "#²"])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (MESSAGES_URL, lambda ids: set(ids)),
        (REVIEW_URL, lambda ids: set(ids[1:])),
        (DECISIONS_URL, lambda ids: {ids[0]}),
    ],
)
def test_admin_search__non_ascii_digits_are_text_not_an_id(admin_client, everything, url, expected, term):
    """'²' is a digit to str.isdigit but not to int(): it is searched for as text."""
    response = admin_client.get(url, {"q": term})

    assert response.status_code == 200
    listed = {getattr(row, "message_id", row.pk) for row in response.context["cl"].result_list}
    assert listed == (set() if term.startswith("#") else expected(everything))


# --- selected ids of an action ----------------------------------------------------------------


@pytest.mark.parametrize("bad", MALFORMED_IDS)
@pytest.mark.parametrize("action", ["requeue", "requeue_later", "discard"])
def test_review_action__malformed_ids_are_ignored(admin_client, jobs, action, bad):
    ids = in_review(jobs, 2)

    alone = act(admin_client, REVIEW_URL, action, [bad], confirm=True, delay_seconds="60")
    assert alone.status_code == 302
    assert texts(alone) == [NOTHING_SELECTED]
    assert statuses(ids) == dict.fromkeys(ids, "review")

    confirmation = act(admin_client, REVIEW_URL, action, [bad, ids[0]], confirm=False)
    assert confirmation.status_code == 200
    assert [item.pk for item, _ in confirmation.context["rows"]] == [ids[0]]
    assert not confirmation.context["skipped"]

    mixed = act(admin_client, REVIEW_URL, action, [ids[0], bad], confirm=True, delay_seconds="60")
    assert mixed.status_code == 302
    assert len(texts(mixed)) == 1 and texts(mixed)[0].startswith(("Requeued 1 message", "Discarded 1 message."))
    after = {ids[1]: "review"} if action == "discard" else {ids[0]: "ready", ids[1]: "review"}
    assert statuses(ids) == after
    assert list(ReviewDecision.objects.values_list("message_id", flat=True)) == [ids[0]]


@pytest.mark.parametrize("bad", MALFORMED_IDS)
def test_queue_purge__malformed_ids_are_ignored(admin_client, jobs, bad):
    other = QueueFactory(name="other")
    MessageFactory.create_batch(2, queue=jobs)
    MessageFactory.create_batch(3, queue=other)

    alone = act(admin_client, QUEUES_URL, "purge_ready", [bad], confirm=True)
    assert alone.status_code == 302 and texts(alone) == [NOTHING_SELECTED]
    assert Message.objects.count() == 5

    confirmation = act(admin_client, QUEUES_URL, "purge_ready", [bad, jobs.pk], confirm=False)
    assert confirmation.status_code == 200
    assert [queue for queue, _ in confirmation.context["rows"]] == [jobs]

    mixed = act(admin_client, QUEUES_URL, "purge_ready", [bad, jobs.pk], confirm=True)
    assert mixed.status_code == 302
    assert texts(mixed) == ["Purged 2 ready messages from 1 queue(s)."]
    assert not Message.objects.filter(queue=jobs).exists()
    assert Message.objects.filter(queue=other).count() == 3


@pytest.mark.parametrize("bad", MALFORMED_IDS)
def test_token_revoke__malformed_ids_are_ignored(admin_client, bad):
    worker = UserFactory(username="billing-bot")
    token, _ = services.token_create(user=worker, name="ci")
    kept, _ = services.token_create(user=worker, name="kept")

    alone = act(admin_client, TOKENS_URL, "revoke", [bad], confirm=True)
    assert alone.status_code == 302 and texts(alone) == [NOTHING_SELECTED]
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()

    confirmation = act(admin_client, TOKENS_URL, "revoke", [token.pk, bad], confirm=False)
    assert confirmation.status_code == 200
    assert [row for row, _ in confirmation.context["rows"]] == [token]
    assert not confirmation.context["skipped"]  # the malformed id is not counted as "already revoked"

    mixed = act(admin_client, TOKENS_URL, "revoke", [token.pk, bad], confirm=True)
    assert mixed.status_code == 302
    assert texts(mixed) == ["Revoked 1 token."]
    assert list(ApiToken.objects.filter(revoked_at__isnull=False)) == [token]
    assert ApiToken.objects.get(pk=kept.pk).revoked_at is None


# --- query-string lookups ----------------------------------------------------------------------

YEAR = "created_at__year"


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (MESSAGES_URL, {"body__regex": "("}),
        (REVIEW_URL, {"body__regex": "("}),
        (DECISIONS_URL, {"note__regex": "("}),
        (MESSAGES_URL, {"id__gt": "0"}),
        (MESSAGES_URL, {"queue__name__regex": "("}),
        (MESSAGES_URL, {"status": "ready\x00"}),
        (REVIEW_URL, {"consumer": "\x00"}),
        (DECISIONS_URL, {"queue_name": "jobs\x00"}),
        *[(url, {YEAR: year}) for url in (QUEUES_URL, TOKENS_URL) for year in ("99999", "-1", "9" * 20, "2024")],
        *[
            (DECISIONS_URL, query)
            for query in (
                {YEAR: "9" * 20},
                {YEAR: "99999"},
                {YEAR: "-1"},
                {YEAR: "²"},
                {YEAR: "9999"},  # Django's own upper bound, the year after, is out of range
                {YEAR: "9999", "created_at__month": "12"},
                {YEAR: "9999", "created_at__month": "12", "created_at__day": "31"},
                {YEAR: "1"},
                {YEAR: "2024", "created_at__month": "9" * 20},
                {YEAR: "2024", "created_at__month": "2", "created_at__day": "9" * 20},
                {YEAR: "2024", "created_at__month": "2", "created_at__day": "31"},
                {"created_at__month": "2"},
                {"created_at__gte": "2024-01-01"},
            )
        ],
    ],
    ids=lambda value: value.split("/")[-2] if isinstance(value, str) else urlencode(value),
)
def test_changelist__lookups_the_admin_does_not_make_are_refused(admin_client, everything, url, query):
    response = admin_client.get(url, query)

    assert refused(response), (response.status_code, response.get("Location"))


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (REVIEW_URL, {"review_reason": "nonsense"}),
        (REVIEW_URL, {"queue": "abc"}),
        (REVIEW_URL, {"queue": "9" * 20}),
        (REVIEW_URL, {"queue": "1"}),
        (REVIEW_URL, {"queue__id__exact": "9" * 20}),
        (REVIEW_URL, {"queue__id__exact": "²"}),
        (REVIEW_URL, {"queue__isnull": "maybe"}),
        (MESSAGES_URL, {"queue": "-1"}),
        (QUEUES_URL, {"on_timeout": "x" * 1000}),
        (DECISIONS_URL, {"action": "requeued", "queue_name__isnull": "2"}),
    ],
    ids=lambda value: value.split("/")[-2] if isinstance(value, str) else urlencode(value)[:40],
)
def test_changelist__bad_values_of_the_admins_own_filters_are_not_a_500(admin_client, everything, url, query):
    response = admin_client.get(url, query)

    assert response.status_code == 200 or refused(response), response.status_code


@pytest.mark.parametrize("url", [REVIEW_URL, DECISIONS_URL, QUEUES_URL, MESSAGES_URL, TOKENS_URL])
def test_changelist__every_link_the_changelist_makes_still_works(admin_client, everything, url):
    """Filters, date hierarchy, facets: follow each query-string link on the page (two levels deep)."""
    seen: set[str] = set()
    pages = [url]
    for _ in range(2):
        links = set()
        for page in pages:
            html = admin_client.get(page).content.decode()
            links |= {url + query.replace("&amp;", "&") for query in re.findall(r'href="(\?[^"#]*)"', html)}
        pages = sorted(links - seen)
        seen |= links
        for link in pages:
            response = admin_client.get(link)
            assert response.status_code == 200, link
    assert any("=" in link for link in seen)


def test_changelist__the_apps_own_links_still_work(admin_client, everything, jobs):
    """The dashboard's link to a queue's review items, and each admin's filters by name."""
    review = admin_client.get(REVIEW_URL, {"queue__id__exact": jobs.pk})
    assert review.status_code == 200
    assert {item.pk for item in review.context["cl"].result_list} == set(everything[1:])
    decision = ReviewDecision.objects.get()
    when = decision.created_at
    for url, query in [
        (REVIEW_URL, {"review_reason__exact": "timeout", "consumer": "worker-1", "queue__isnull": "False"}),
        (MESSAGES_URL, {"status": "review", "queue__id__exact": jobs.pk}),
        (DECISIONS_URL, {"action__exact": "requeued", "queue_name": "jobs", YEAR: when.year}),
        (DECISIONS_URL, {YEAR: when.year, "created_at__month": when.month, "created_at__day": when.day}),
        (QUEUES_URL, {"on_timeout__exact": "review"}),
        (TOKENS_URL, {"state": "active"}),
    ]:
        response = admin_client.get(url, query)
        assert response.status_code == 200, (url, query)
        assert len(response.context["cl"].result_list) >= 1, (url, query)


LONG_SEARCH = " ".join(["a"] * 1000)  # each word an AND: SQLite refused the expression (over 1,000 deep)


@pytest.mark.parametrize("url", [REVIEW_URL, MESSAGES_URL, QUEUES_URL, DECISIONS_URL, TOKENS_URL, "/admin/auth/user/"])
def test_admin_search__a_thousand_words_is_refused_with_a_message_not_a_500(admin_client, everything, url):
    response = admin_client.get(url, {"q": LONG_SEARCH})

    assert response.status_code == 200
    assert "A search takes at most 50 words." in texts(response)
    assert response.context["cl"].result_count == 0


def test_admin_autocomplete__a_thousand_words_finds_nothing_not_a_500(admin_client, everything):
    query = {"app_label": "queues", "model_name": "queue", "field_name": "owner", "term": LONG_SEARCH}

    response = admin_client.get("/admin/autocomplete/", query)

    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize("bad", ["abc", "99999999999999999999"])
@pytest.mark.parametrize(
    ("url", "field"), [(f"{QUEUES_URL}add/", "owner"), (f"{TOKENS_URL}add/", "user")], ids=["queue", "token"]
)
def test_admin_autocomplete_field__a_malformed_id_redraws_as_no_choice(admin_client, jobs, url, field, bad):
    """The widget looked the raw value up to draw the chosen option: a ValueError or OverflowError, a 500."""
    assert admin_client.get(url, {field: bad}).status_code == 200

    response = admin_client.post(url, {field: bad, "name": "fresh"})

    assert response.status_code == 200  # the form again, with the field's error
    assert response.context["adminform"].form.errors[field]
    assert ApiToken.objects.count() == 0 and list(Queue.objects.values_list("name", flat=True)) == ["jobs"]


@pytest.mark.parametrize("bad", ["abc", "99999999999999999999"])
def test_admin_autocomplete_field__a_malformed_grant_user_redraws_as_no_choice(admin_client, jobs, bad):
    data = {
        "name": "jobs",
        "owner": jobs.owner_id,
        "on_timeout": jobs.on_timeout,
        "visibility_timeout": jobs.visibility_timeout,
        "max_receives": jobs.max_receives,
        "delay_seconds": jobs.delay_seconds,
        "max_message_bytes": jobs.max_message_bytes,
        "grants-TOTAL_FORMS": "1",
        "grants-INITIAL_FORMS": "0",
        "grants-0-user": bad,
        "grants-0-can_send": "on",
    }

    response = admin_client.post(f"{QUEUES_URL}{jobs.pk}/change/", data)

    assert response.status_code == 200
    assert not QueueGrant.objects.exists()
