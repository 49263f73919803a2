"""Create a queue from the command line."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from queues.models import Queue, queue_name_validator
from queues.services import QueueExists, queue_create


class Command(BaseCommand):
    help = "Create a queue owned by a user."

    def add_arguments(self, parser):
        parser.add_argument("name", help="1-80 characters of A-Z, a-z, 0-9, '_' and '-'.")
        parser.add_argument("--owner", required=True, help="Username of the owner (must exist).")
        parser.add_argument("--visibility-timeout", type=int, default=30, help="Lease length in seconds.")
        parser.add_argument(
            "--on-timeout", choices=Queue.OnTimeout.values, default=Queue.OnTimeout.REVIEW, help="review or requeue"
        )
        parser.add_argument("--max-receives", type=int, default=5, help="Deliveries before review (requeue queues).")

    def handle(self, *args, name, owner, visibility_timeout, on_timeout, max_receives, **options):
        try:
            queue_name_validator(name)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user named {owner!r}; create one with create_token.")
        try:
            queue = queue_create(
                name=name,
                owner=user,
                visibility_timeout=visibility_timeout,
                on_timeout=on_timeout,
                max_receives=max_receives,
            )
        except QueueExists:
            raise CommandError(f"A queue named {name!r} already exists.") from None
        self.stdout.write(f"Created queue {queue.name!r} (owner {owner}, on_timeout={on_timeout}).")
