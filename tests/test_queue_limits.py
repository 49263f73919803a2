"""A queue's defaults and limits are the WONDERQ_* settings, whichever way the queue is made."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from queues import services
from queues.models import Message, Queue
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/queues/queue/add/"


def _admin_form(owner, **values) -> dict:
    form = {
        "name": "emails",
        "owner": owner.pk,
        "visibility_timeout": 30,
        "on_timeout": "review",
        "max_receives": 5,
        "delay_seconds": 0,
        "max_message_bytes": 1024,
        "grants-TOTAL_FORMS": 0,
        "grants-INITIAL_FORMS": 0,
    }
    return {**form, **values}


def test_queue_defaults__follow_the_settings(settings, user, api):
    settings.WONDERQ_DEFAULT_VISIBILITY_TIMEOUT = 60
    settings.WONDERQ_DEFAULT_MAX_RECEIVES = 2
    settings.WONDERQ_MAX_MESSAGE_BYTES = 1000
    made = [services.queue_create(name="by-service", owner=user)]
    call_command("create_queue", "by-command", "--owner", user.username, stdout=StringIO())
    assert api.post("/api/v1/queues/", {"name": "by-api"}, format="json").status_code == 201
    made += Queue.objects.filter(name__in=["by-command", "by-api"])
    assert [(q.visibility_timeout, q.max_receives, q.max_message_bytes) for q in made] == [(60, 2, 1000)] * 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("visibility_timeout", 43_201, "less than or equal to 43200"),
        ("visibility_timeout", 999_999_999_999, "less than or equal to 43200"),
        ("visibility_timeout", -1, "greater than or equal to 0"),
        ("max_receives", 0, "greater than or equal to 1"),
        ("max_receives", 1001, "less than or equal to 1000"),
        ("delay_seconds", 901, "less than or equal to 900"),
        ("max_message_bytes", 262_145, "less than or equal to 262144"),
        ("on_timeout", "drop", "not a valid choice"),
    ],
)
def test_queue_create__refuses_a_value_out_of_range_and_names_it(user, field, value, message):
    with pytest.raises(ValidationError) as caught:
        services.queue_create(name="jobs", owner=user, **{field: value})
    assert list(caught.value.message_dict) == [field]
    assert message in caught.value.message_dict[field][0]
    assert not Queue.objects.exists()


def test_queue_update__refuses_a_value_out_of_range_and_changes_nothing(queue):
    with pytest.raises(ValidationError, match="43200"):
        services.queue_update(queue=queue, visibility_timeout=43_201, max_receives=3)
    queue.refresh_from_db()
    assert (queue.visibility_timeout, queue.max_receives) == (30, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--visibility-timeout", "999999999999"], "--visibility-timeout: Ensure this value is less than or equal to"),
        (["--visibility-timeout", "-1"], "--visibility-timeout: Ensure this value is greater than or equal to 0"),
        (["--max-receives", "0"], "--max-receives: Ensure this value is greater than or equal to 1"),
        (["--delay-seconds", "1000"], "--delay-seconds: Ensure this value is less than or equal to 900"),
    ],
)
def test_create_queue_command__names_the_bad_option(user, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_queue", "jobs", "--owner", user.username, *args, stdout=StringIO())
    assert not Queue.objects.exists()


def test_admin_queue_form__refuses_values_past_the_limits_and_saves_nothing(user):
    staff = UserFactory(staff=True, username="olga")
    client = Client()
    client.force_login(staff)
    huge = 9_223_372_036_854_775_807
    values = {"visibility_timeout": huge, "delay_seconds": 999_999_999, "max_receives": huge, "max_message_bytes": huge}
    response = client.post(ADD_URL, _admin_form(user, **values))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert sorted(errors) == ["delay_seconds", "max_message_bytes", "max_receives", "visibility_timeout"]
    assert not Queue.objects.exists()
    assert client.post(ADD_URL, _admin_form(user)).status_code == 302
    assert Queue.objects.get().visibility_timeout == 30


@pytest.mark.parametrize("hot_path", [True, False], ids=["hot path", "normal stack"])
def test_send__never_takes_more_than_the_setting_allows_now(settings, api, queue, hot_path):
    """A queue made under a higher WONDERQ_MAX_MESSAGE_BYTES keeps its own limit, but the setting caps it."""
    assert queue.max_message_bytes == 256 * 1024
    settings.WONDERQ_MAX_MESSAGE_BYTES = 1000
    if not hot_path:
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("HotPathMiddleware")]
    url = f"/api/v1/queues/{queue.name}/messages/"
    response = api.post(url, {"body": "x" * 5000}, format="json")
    assert response.status_code == 400
    assert response.json() == {"body": ["Message is 5000 bytes; this queue accepts at most 1000."]}
    assert not Message.objects.exists()
    assert api.post(url, {"body": "x" * 900}, format="json").status_code == 201
