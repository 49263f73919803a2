"""WonderQ's business logic: one function per transition, `<entity>_<action>`, each taking `now=`."""

from queues.services.leases import SweepResult, leases_expire_for_queue, leases_sweep
from queues.services.messages import (
    ACKED,
    ACKED_LATE,
    NOT_FOUND,
    STALE,
    OutgoingMessage,
    Sent,
    message_ack,
    message_extend,
    message_json_size,
    message_receive,
    message_reject,
    message_release,
    message_send,
)
from queues.services.queues import (
    QueueExists,
    queue_counts,
    queue_create,
    queue_delete,
    queue_purge,
    queue_update,
)
from queues.services.review import review_discard, review_requeue
from queues.services.tokens import token_authenticate, token_create, token_revoke

__all__ = [
    "ACKED",
    "ACKED_LATE",
    "NOT_FOUND",
    "STALE",
    "OutgoingMessage",
    "QueueExists",
    "Sent",
    "SweepResult",
    "leases_expire_for_queue",
    "leases_sweep",
    "message_ack",
    "message_extend",
    "message_json_size",
    "message_receive",
    "message_reject",
    "message_release",
    "message_send",
    "queue_counts",
    "queue_create",
    "queue_delete",
    "queue_purge",
    "queue_update",
    "review_discard",
    "review_requeue",
    "token_authenticate",
    "token_create",
    "token_revoke",
]
