"""Queues, their messages, grants, API tokens and the operators' decision log.

Querysets name states (`ready(now=...)`, `lease_expired(now=...)`); only
`queues.services` changes them.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from queues.conf import app_settings

QUEUE_NAME_PATTERN = r"[A-Za-z0-9_-]{1,80}"
queue_name_validator = RegexValidator(
    rf"^{QUEUE_NAME_PATTERN}\Z", "Queue names are 1-80 characters of A-Z, a-z, 0-9, '_' and '-'."
)


# A queue's defaults and limits follow the WONDERQ_* settings when they are read (named
# functions, so that migrations can refer to them): a queue made in the admin, by
# create_queue or through the API gets the same defaults, and none can go past a limit.
def default_visibility_timeout() -> int:
    return app_settings.DEFAULT_VISIBILITY_TIMEOUT


def default_max_receives() -> int:
    return app_settings.DEFAULT_MAX_RECEIVES


def max_visibility_timeout() -> int:
    return app_settings.MAX_VISIBILITY_TIMEOUT


def max_receives_limit() -> int:
    return app_settings.MAX_RECEIVES_LIMIT


def max_delay_seconds() -> int:
    return app_settings.MAX_DELAY_SECONDS


def message_bytes_limit() -> int:
    return app_settings.MAX_MESSAGE_BYTES


class QueueQuerySet(models.QuerySet):
    def visible_to(self, user) -> QueueQuerySet:
        """Queues the user owns, holds a grant on, or every queue for staff."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(Q(owner=user) | Q(grants__user=user)).distinct()


class Queue(models.Model):
    class OnTimeout(models.TextChoices):
        REVIEW = "review", "Send to review"
        REQUEUE = "requeue", "Requeue (review after max_receives)"

    name = models.CharField(max_length=80, unique=True, validators=[queue_name_validator])
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="queues")
    visibility_timeout = models.PositiveIntegerField(
        default=default_visibility_timeout,
        validators=[MaxValueValidator(max_visibility_timeout)],
        help_text="Seconds a received message stays leased before it times out.",
    )
    on_timeout = models.CharField(
        max_length=10,
        choices=OnTimeout.choices,
        default=OnTimeout.REVIEW,
        help_text="What happens to a message whose lease runs out.",
    )
    max_receives = models.PositiveIntegerField(
        default=default_max_receives,
        validators=[MinValueValidator(1), MaxValueValidator(max_receives_limit)],
        help_text="Deliveries after which a timed-out message goes to review (requeue queues).",
    )
    delay_seconds = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(max_delay_seconds)],
        help_text="Default delay before a new message can be received.",
    )
    max_message_bytes = models.PositiveIntegerField(
        default=message_bytes_limit,
        validators=[MinValueValidator(1), MaxValueValidator(message_bytes_limit)],
        help_text="Largest body plus attributes accepted, in UTF-8 bytes (never more than WONDERQ_MAX_MESSAGE_BYTES).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = QueueQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def accepts_bytes(self) -> int:
        """The largest message a send may bring, body plus attributes in UTF-8 bytes.

        The queue's own limit, and never more than WONDERQ_MAX_MESSAGE_BYTES, which may have been
        lowered since the queue was made.
        """
        return min(self.max_message_bytes, app_settings.MAX_MESSAGE_BYTES)


class QueueGrant(models.Model):
    """What a user other than the owner may do with a queue."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queue_grants")
    can_send = models.BooleanField(default=False, help_text="May send messages.")
    can_receive = models.BooleanField(default=False, help_text="May receive, ack, extend, release and reject.")
    can_manage = models.BooleanField(
        default=False, help_text="May change settings, purge, delete and resolve review items."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "user"], name="queuegrant_unique")]

    def __str__(self) -> str:
        return f"{self.user} on {self.queue}"


class MessageQuerySet(models.QuerySet):
    def ready(self, *, now) -> MessageQuerySet:
        """READY and due: what receive may lease."""
        return self.filter(status=Message.Status.READY, available_at__lte=now)

    def delayed(self, *, now) -> MessageQuerySet:
        return self.filter(status=Message.Status.READY, available_at__gt=now)

    def leased(self, *, now) -> MessageQuerySet:
        """LEASED with a lease that is still running."""
        return self.filter(status=Message.Status.LEASED, lease_expires_at__gt=now)

    def lease_expired(self, *, now) -> MessageQuerySet:
        """LEASED whose lease has run out, whether or not the sweep has seen it."""
        return self.filter(status=Message.Status.LEASED, lease_expires_at__lte=now)

    def in_review(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.REVIEW)

    def live(self) -> MessageQuerySet:
        """Everything but acked tombstones.

        Spelled as one equality per status, never `status <> 'acked'`: each equality matches a
        partial index that leads with the queue, so a filter by queue reads those three indexes.
        """
        return self.filter(
            Q(status=Message.Status.READY) | Q(status=Message.Status.LEASED) | Q(status=Message.Status.REVIEW)
        )


class Message(models.Model):
    class Status(models.TextChoices):
        READY = "ready", "Ready"
        LEASED = "leased", "Leased"
        REVIEW = "review", "In review"
        ACKED = "acked", "Acked"  # a tombstone until pruned: makes a retried ack idempotent

    class ReviewReason(models.TextChoices):
        TIMEOUT = "timeout", "Lease timed out"
        MAX_RECEIVES = "max_receives", "Delivered max_receives times"
        REJECTED = "rejected", "Rejected by consumer"

    # No index of its own (migration 0004): every lookup names the statuses it wants, and each
    # status has a partial index that leads with the queue. A plain one would take an entry at
    # every receive, ack and timed-out lease, for the only readers that name no status: the
    # cascade when a queue is deleted and the key check then (one scan of the table each).
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, db_index=False, related_name="messages")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.READY)
    body = models.TextField()
    attributes = models.JSONField(default=dict, blank=True)
    dedup_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 (NULL stays out of the unique constraint)
    sent_at = models.DateTimeField()
    available_at = models.DateTimeField(help_text="When the message may next be received.")
    receive_count = models.PositiveIntegerField(default=0)
    # The current (or, once it timed out, the last) delivery. A receipt is "<id>.<token>".
    receipt = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (NULL: no lease to speak of)
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    consumer = models.CharField(
        max_length=200, blank=True, default="", help_text="Label the consumer gave when it received."
    )
    # No index of its own: only deleting a user looks messages up by it (a rare scan), while
    # every receive would have to maintain it. Not checked by PostgreSQL (migration 0013): each
    # leased row's check at commit locked the user's row, about a seventh of the rate at B = 100.
    leased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        db_index=False,
        related_name="+",
        help_text="User behind the token that received the message.",
    )
    review_reason = models.CharField(max_length=16, choices=ReviewReason.choices, blank=True, default="")
    review_note = models.TextField(blank=True, default="", help_text="Reason given by a rejecting consumer.")
    review_at = models.DateTimeField(null=True, blank=True, help_text="When it entered review.")
    acked_at = models.DateTimeField(null=True, blank=True)
    acked_from = models.CharField(
        max_length=8,
        blank=True,
        default="",
        help_text="State the ack found: leased (on time), expired, review or ready (late acks).",
    )

    objects = MessageQuerySet.as_manager()

    class Meta:
        indexes = [
            # Receive: the oldest due READY messages of one queue, in order.
            models.Index(
                fields=["queue", "available_at", "id"],
                name="message_ready_idx",
                condition=Q(status="ready"),
            ),
            # Leases, one queue's in expiry order: the sweep walks each queue's expired ones,
            # a requeue queue's receive and the counts read one queue's. Every receive writes an
            # entry here (and on SQLite every ack and timed-out lease removes one): one index only.
            models.Index(
                fields=["queue", "lease_expires_at", "id"],
                name="message_leased_idx",
                condition=Q(status="leased"),
            ),
            models.Index(fields=["queue", "review_at"], name="message_review_idx", condition=Q(status="review")),
            # Pruning walks each queue's tombstones oldest first; snapshots count a queue's recent acks.
            models.Index(fields=["queue", "acked_at"], name="message_queue_acked_idx", condition=Q(status="acked")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="leased") | (Q(receipt__isnull=False) & Q(lease_expires_at__isnull=False)),
                name="message_leased_has_lease",
            ),
            models.UniqueConstraint(
                fields=["queue", "dedup_id"],
                condition=Q(dedup_id__isnull=False),
                name="message_dedup_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.pk} on {self.queue_id} ({self.status})"

    # A lease that times out into review leaves its delivery on this row (consumer, user,
    # leased_at, lease_expires_at) and no history row: the row is not re-leased while it
    # sits in review, and the sweep then writes one row per message instead of two. The
    # history row is written when the message leaves review: requeue, discard or a late ack.
    TIMED_OUT_INTO_REVIEW = (ReviewReason.TIMEOUT, ReviewReason.MAX_RECEIVES)

    def history(self) -> list[Delivery]:
        """Every delivery that ended without an ack, in order, the one that put it in review included.

        Reads `deliveries` through the caller's prefetch when there is one.
        """
        prefetched = getattr(self, "_prefetched_objects_cache", {})
        recorded = prefetched.get("deliveries", None)
        if recorded is None:
            recorded = self.deliveries.select_related("leased_by")
        deliveries = sorted(recorded, key=lambda d: (d.attempt, d.id))
        if (
            self.status == self.Status.REVIEW
            and self.review_reason in self.TIMED_OUT_INTO_REVIEW
            and not any(d.attempt == self.receive_count for d in deliveries)
        ):
            try:
                leased_by = self.leased_by
            except ObjectDoesNotExist:  # unchecked on PostgreSQL (0013): a user deleted during their receive
                leased_by = None
            deliveries.append(
                Delivery(
                    message=self,
                    queue_id=self.queue_id,
                    attempt=self.receive_count,
                    consumer=self.consumer,
                    leased_by=leased_by,
                    leased_at=self.leased_at,
                    ended_at=self.lease_expires_at,
                    outcome=Delivery.Outcome.EXPIRED,
                )
            )
        return deliveries


class Delivery(models.Model):
    """A delivery that ended without an ack: the history operators read in review.

    Written only when a lease ends badly, so receive -> ack pays nothing for it, and for a
    lease that timed out into review only once the message leaves review (Message.history).
    """

    class Outcome(models.TextChoices):
        EXPIRED = "expired", "Lease expired"
        RELEASED = "released", "Released by consumer"
        REJECTED = "rejected", "Rejected by consumer"

    # History is written a batch at a time by the sweep, copied from message rows, so here the
    # database checks no key: on PostgreSQL each check is a trigger per row at commit, a third of
    # a sweep's time (migration 0003). Django still cascades a queue's deletion and nulls a
    # deleted user, through the indexes on both. The message's queue key is checked; its user key
    # not on PostgreSQL (0013), so a user deleted during their receive can leave a key to no one.
    # delivery_message_idx leads with the message, so that key needs no index of its own.
    message = models.ForeignKey(
        Message, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="deliveries"
    )
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, db_constraint=False, related_name="+")
    attempt = models.PositiveIntegerField(help_text="Which delivery of the message this was.")
    consumer = models.CharField(max_length=200, blank=True, default="")
    leased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="+",
    )
    leased_at = models.DateTimeField(null=True)
    ended_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["message", "attempt"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["message", "attempt"], name="delivery_message_idx")]

    def __str__(self) -> str:
        return f"delivery {self.attempt} of message {self.message_id}: {self.outcome}"


class ReviewDecision(models.Model):
    """What happened to a review item, by whom: kept after the message is gone."""

    class Action(models.TextChoices):
        REQUEUED = "requeued", "Requeued"
        DISCARDED = "discarded", "Discarded"
        ACKED_LATE = "acked_late", "Acknowledged late"

    queue = models.ForeignKey(Queue, null=True, on_delete=models.SET_NULL, related_name="+")
    queue_name = models.CharField(max_length=80)
    message_id = models.BigIntegerField()
    action = models.CharField(max_length=12, choices=Action.choices)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=200, help_text="Operator's username or the late consumer's label.")
    note = models.TextField(blank=True, default="")
    delay_seconds = models.PositiveIntegerField(default=0)
    review_reason = models.CharField(max_length=16, blank=True, default="")
    receive_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["message_id"], name="decision_message_idx")]

    def __str__(self) -> str:
        return f"{self.action} message {self.message_id} by {self.actor}"


def _token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self, *, now) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class ApiToken(models.Model):
    """An API token. Only its SHA-256 digest is stored: the key is shown once, at creation.

    Keys carry 256 bits of randomness, so a fast hash is safe here (no password stretching needed).
    """

    PREFIX = "wq_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'billing-worker'.")
    key_prefix = models.CharField(max_length=12, help_text="First characters of the key, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @classmethod
    def generate_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def digest_of(raw: str) -> str:
        return _token_digest(raw)


class ReviewItemManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(status=Message.Status.REVIEW)


class ReviewItem(Message):
    """A message waiting for an operator's decision (status REVIEW)."""

    objects = ReviewItemManager()

    class Meta:
        proxy = True
        verbose_name = "review item"


class QueueSnapshot(models.Model):
    """A queue's depth at one moment, taken by the scheduled stats task; the dashboard charts these."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField()
    ready = models.PositiveIntegerField(default=0)
    delayed = models.PositiveIntegerField(default=0)
    leased = models.PositiveIntegerField(default=0)
    review = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0, help_text="Messages sent since the previous snapshot.")
    acked = models.PositiveIntegerField(default=0, help_text="Messages acked since the previous snapshot.")
    last_message_id = models.BigIntegerField(default=0, help_text="Highest message id seen; counts 'sent' next time.")

    class Meta:
        ordering = ["queue", "taken_at"]
        indexes = [
            models.Index(fields=["queue", "taken_at"], name="snapshot_queue_time_idx"),
            # Every queue's snapshots of a time range: the dashboard's totals, and prune's old ones.
            models.Index(fields=["taken_at"], name="snapshot_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.queue} at {self.taken_at:%Y-%m-%d %H:%M}"
