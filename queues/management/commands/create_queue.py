"""Create a queue from the command line."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from queues.management.base import DatabaseCommand
from queues.models import Queue, queue_name_validator
from queues.services import QueueExists, queue_create

_OPTIONS = ("visibility_timeout", "max_receives", "delay_seconds", "max_message_bytes")


class Command(DatabaseCommand):
    help = "Create a queue owned by a user."

    def add_arguments(self, parser):
        parser.add_argument("name", help="1-80 characters of A-Z, a-z, 0-9, '_' and '-'.")
        parser.add_argument("--owner", required=True, help="Username of the owner (must exist).")
        parser.add_argument(
            "--visibility-timeout",
            type=int,
            help="Lease length in seconds (default WONDERQ_DEFAULT_VISIBILITY_TIMEOUT).",
        )
        parser.add_argument(
            "--on-timeout", choices=Queue.OnTimeout.values, default=Queue.OnTimeout.REVIEW, help="review or requeue"
        )
        parser.add_argument(
            "--max-receives",
            type=int,
            help="Deliveries before review, in requeue queues (default WONDERQ_DEFAULT_MAX_RECEIVES).",
        )
        parser.add_argument("--delay-seconds", type=int, help="Default delay of a new message (default 0).")
        parser.add_argument(
            "--max-message-bytes", type=int, help="Largest body plus attributes (default WONDERQ_MAX_MESSAGE_BYTES)."
        )

    def handle(self, *args, name, owner, on_timeout, **options):
        try:
            queue_name_validator(name)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user named {owner!r}; create one with create_token.")
        if not user.is_active:
            # Its tokens cannot authenticate: no one but staff could use the queue (create_token refuses it too).
            raise CommandError(f"User {owner!r} is inactive; reactivate it first (admin, Users).")
        given = {field: options[field] for field in _OPTIONS if options[field] is not None}
        try:
            queue = queue_create(name=name, owner=user, on_timeout=on_timeout, **given)
        except QueueExists:
            raise CommandError(f"A queue named {name!r} already exists.") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"--{field.replace('_', '-')}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
            raise CommandError(problems) from None
        self.stdout.write(
            f"Created queue {queue.name!r} (owner {owner}, on_timeout={on_timeout}, "
            f"visibility_timeout={queue.visibility_timeout}, max_receives={queue.max_receives})."
        )
