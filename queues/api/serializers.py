"""Input and output serializers, one pair per action. Inputs refuse unknown fields."""

from __future__ import annotations

import re

from rest_framework import serializers

from queues.api import schema  # noqa: F401 (registers the OpenAPI extensions for the fields below)
from queues.conf import app_settings
from queues.models import QUEUE_NAME_PATTERN, Delivery, Message, Queue
from queues.services import message_json_size

# The characters SQS accepts in a message: tab, LF, CR, and U+0020 upward, without
# surrogates and the non-characters U+FFFE / U+FFFF.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}\Z")
# Printable ASCII, as SQS. Anchored at both ends: RegexField *searches*, so without \A
# "has space" or 129 characters (too long for the column) would pass on their tail.
_DEDUP_ID = re.compile(r"\A[!-~]{1,128}\Z")


class StringOnly:
    """For a string field: takes only JSON strings, so 7 is not silently the dedup id, name or receipt "7"."""

    default_error_messages = {"not_a_string": "Not a valid string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictString(StringOnly, serializers.CharField):
    pass


class StrictRegex(StringOnly, serializers.RegexField):
    pass


class StrictText(serializers.CharField):
    """A string field that takes only JSON strings (no numbers coerced) and SQS's characters."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        match = _NOT_SQS_TEXT.search(data)
        if match:
            raise serializers.ValidationError(
                f"Contains a character that is not allowed: U+{ord(match.group()):04X} at position {match.start()}."
            )
        return super().to_internal_value(data)


class StrictInteger(serializers.IntegerField):
    """An integer field that refuses strings, floats and booleans; `max_setting` names a WONDERQ_* limit."""

    def __init__(self, *, max_setting: str | None = None, **kwargs):
        self.max_setting = max_setting
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if self.max_setting and value > getattr(app_settings, self.max_setting):
            self.fail("max_value", max_value=getattr(app_settings, self.max_setting))
        return value


class LimitedList(serializers.ListField):
    """A non-empty list of at most MAX_BATCH items (read when validating, so tests can change it)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_empty", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > app_settings.MAX_BATCH:
            raise serializers.ValidationError(f"At most {app_settings.MAX_BATCH} items per request.")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error and not a silent default."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


# --- Queues ------------------------------------------------------------------------


def _queue_setting_fields(*, required_name: bool) -> dict:
    fields = {
        "visibility_timeout": StrictInteger(required=False, min_value=0, max_setting="MAX_VISIBILITY_TIMEOUT"),
        "on_timeout": serializers.ChoiceField(choices=Queue.OnTimeout.choices, required=False),
        "max_receives": StrictInteger(required=False, min_value=1, max_setting="MAX_RECEIVES_LIMIT"),
        "delay_seconds": StrictInteger(required=False, min_value=0, max_setting="MAX_DELAY_SECONDS"),
        "max_message_bytes": StrictInteger(required=False, min_value=1, max_setting="MAX_MESSAGE_BYTES"),
    }
    if required_name:
        fields["name"] = StrictRegex(
            rf"^{QUEUE_NAME_PATTERN}\Z",
            max_length=80,
            # Not trimmed: " jobs\n" is an invalid name, not a request for "jobs".
            trim_whitespace=False,
            error_messages={"invalid": "Use 1-80 characters of A-Z, a-z, 0-9, '_' and '-'."},
        )
    return fields


class QueueCreateIn(StrictSerializer):
    def get_fields(self):
        return _queue_setting_fields(required_name=True)


class QueueUpdateIn(StrictSerializer):
    def get_fields(self):
        return _queue_setting_fields(required_name=False)


class QueueOut(serializers.Serializer):
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.get_username")
    visibility_timeout = serializers.IntegerField()
    on_timeout = serializers.CharField()
    max_receives = serializers.IntegerField()
    delay_seconds = serializers.IntegerField()
    max_message_bytes = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    ready = serializers.IntegerField(source="counts.ready")
    delayed = serializers.IntegerField(source="counts.delayed")
    leased = serializers.IntegerField(source="counts.leased")
    review = serializers.IntegerField(source="counts.review")
    oldest_ready_age_seconds = serializers.FloatField(source="counts.oldest_ready_age_seconds", allow_null=True)


# --- Messages ----------------------------------------------------------------------


class AttributesField(serializers.DictField):
    """Up to MAX_ATTRIBUTES named values: strings, numbers or booleans."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        if len(data) > app_settings.MAX_ATTRIBUTES:
            raise serializers.ValidationError(f"At most {app_settings.MAX_ATTRIBUTES} attributes.")
        text = StrictText(max_length=app_settings.MAX_MESSAGE_BYTES)
        for name, value in data.items():
            if not _ATTRIBUTE_NAME.match(name):
                raise serializers.ValidationError(f"Attribute name {name[:40]!r}: use 1-256 of A-Z a-z 0-9 _ . -")
            if isinstance(value, str):
                text.run_validation(value)
            elif not isinstance(value, int | float | bool):
                raise serializers.ValidationError(f"Attribute {name!r}: values are strings, numbers or booleans.")
        return data


class MessageIn(StrictSerializer):
    body = StrictText(allow_blank=False)
    attributes = AttributesField(required=False)
    delay_seconds = StrictInteger(required=False, min_value=0, max_setting="MAX_DELAY_SECONDS")
    dedup_id = StrictRegex(
        _DEDUP_ID.pattern,
        required=False,
        trim_whitespace=False,
        error_messages={"invalid": "Use 1-128 printable ASCII characters."},
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        queue = self.context["queue"]
        size = message_json_size(body=attrs["body"], attributes=attrs.get("attributes"))
        if size > queue.accepts_bytes:
            raise serializers.ValidationError(
                {"body": [f"Message is {size} bytes; this queue accepts at most {queue.accepts_bytes}."]}
            )
        return attrs


class SendBatchIn(StrictSerializer):
    messages = LimitedList(child=MessageIn())


class SentOut(serializers.Serializer):
    id = serializers.IntegerField()
    duplicate = serializers.BooleanField()


class SendOut(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField())
    messages = SentOut(many=True)


class ReceiveIn(StrictSerializer):
    max_messages = StrictInteger(required=False, default=1, min_value=1, max_setting="MAX_BATCH")
    visibility_timeout = StrictInteger(required=False, min_value=0, max_setting="MAX_VISIBILITY_TIMEOUT")
    wait_seconds = StrictInteger(required=False, default=0, min_value=0, max_setting="MAX_WAIT_SECONDS")
    consumer = StrictText(required=False, default="", allow_blank=True, max_length=200)


class ReceivedOut(serializers.Serializer):
    id = serializers.IntegerField()
    body = serializers.CharField()
    attributes = serializers.DictField()
    receipt = serializers.CharField()
    lease_expires_at = serializers.DateTimeField()
    receive_count = serializers.IntegerField()
    sent_at = serializers.DateTimeField()


class ReceiveOut(serializers.Serializer):
    messages = ReceivedOut(many=True)


class ReceiptsIn(StrictSerializer):
    """Either one `receipt` (answered 200 / 409 / 404) or a batch of `receipts` (one result each)."""

    schema_constraints = {"oneOf": [{"required": ["receipt"]}, {"required": ["receipts"]}]}

    receipt = StrictString(required=False, max_length=64, trim_whitespace=False)
    receipts = LimitedList(child=StrictString(max_length=64, trim_whitespace=False), required=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if ("receipt" in attrs) == ("receipts" in attrs):
            raise serializers.ValidationError({"receipts": ["Give either 'receipt' or 'receipts', not both."]})
        return attrs


class ExtendIn(ReceiptsIn):
    visibility_timeout = StrictInteger(min_value=0, max_setting="MAX_VISIBILITY_TIMEOUT")


class ReleaseIn(ReceiptsIn):
    delay_seconds = StrictInteger(required=False, default=0, min_value=0, max_setting="MAX_DELAY_SECONDS")


class RejectIn(ReceiptsIn):
    reason = StrictText(required=False, default="", allow_blank=True, max_length=1000)


class ItemResultOut(serializers.Serializer):
    receipt = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["acked", "acked_late", "extended", "released", "rejected", "stale", "not_found"]
    )
    detail = serializers.CharField(required=False)
    lease_expires_at = serializers.DateTimeField(required=False)


class ResultsOut(serializers.Serializer):
    results = ItemResultOut(many=True)


class NoBodyIn(StrictSerializer):
    """Purge and the deletes take no fields: a body, if sent, must be empty or `{}`.

    Otherwise a client that thinks it names what to purge or delete (`{"ids": [...]}`) would
    purge the whole queue; a malformed body answers 400 as anywhere else.
    """


class PurgeOut(serializers.Serializer):
    purged = serializers.IntegerField()


# --- Review ------------------------------------------------------------------------


class ReviewListIn(serializers.Serializer):
    # `source` makes validated_data usable as ORM filters: the model field is review_reason.
    reason = serializers.ChoiceField(choices=Message.ReviewReason.choices, required=False, source="review_reason")
    consumer = serializers.CharField(required=False, max_length=200)


class ReviewIdsIn(StrictSerializer):
    # Capped at BIGINT: a larger id could not exist, and SQLite refuses to bind it (a 500).
    ids = LimitedList(child=StrictInteger(min_value=1, max_value=2**63 - 1))
    note = StrictText(required=False, default="", allow_blank=True, max_length=1000)


class ReviewRequeueIn(ReviewIdsIn):
    delay_seconds = StrictInteger(required=False, default=0, min_value=0, max_setting="MAX_DELAY_SECONDS")


class DeliveryOut(serializers.ModelSerializer):
    leased_by = serializers.CharField(source="leased_by.get_username", default=None)

    class Meta:
        model = Delivery
        fields = ["attempt", "consumer", "leased_by", "leased_at", "ended_at", "outcome", "reason"]


class ReviewItemOut(serializers.ModelSerializer):
    reason = serializers.CharField(source="review_reason")
    note = serializers.CharField(source="review_note")
    leased_by = serializers.CharField(source="leased_by.get_username", default=None)
    timed_out_at = serializers.DateTimeField(source="review_at")
    # The deliveries that ended without an ack, the one that timed out into review included.
    deliveries = DeliveryOut(many=True, source="history")

    class Meta:
        model = Message
        fields = [
            "id",
            "body",
            "attributes",
            "reason",
            "note",
            "consumer",
            "leased_by",
            "leased_at",
            "timed_out_at",
            "receive_count",
            "sent_at",
            "deliveries",
        ]


class ReviewResultOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["requeued", "discarded", "not_found"])


class ReviewResultsOut(serializers.Serializer):
    results = ReviewResultOut(many=True)


# --- Grants ------------------------------------------------------------------------


class StrictBoolean(serializers.BooleanField):
    """A boolean field that takes only JSON true and false (no "yes", 1 or "true")."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class GrantIn(StrictSerializer):
    """The whole grant: a permission left out is not granted. At least one must be true."""

    send = StrictBoolean(required=False, default=False, help_text="May send messages.")
    receive = StrictBoolean(required=False, default=False, help_text="May receive, ack, extend, release and reject.")
    manage = StrictBoolean(
        required=False,
        default=False,
        help_text="May change settings, purge, delete, resolve review items and manage grants.",
    )


class GrantOut(serializers.Serializer):
    user = serializers.CharField(source="user.get_username")
    send = serializers.BooleanField(source="can_send")
    receive = serializers.BooleanField(source="can_receive")
    manage = serializers.BooleanField(source="can_manage")
