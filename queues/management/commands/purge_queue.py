"""Delete every READY message of a queue."""

from django.core.management.base import CommandError

from queues.management.base import DatabaseCommand
from queues.models import Queue
from queues.services import queue_purge


class Command(DatabaseCommand):
    help = "Delete every READY (and delayed) message of a queue. Leased and review messages stay."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The queue's name.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, name, yes, **options):
        queue = Queue.objects.filter(name=name).first()
        if queue is None:
            raise CommandError(f"No queue named {name!r}.")
        if not yes:
            try:
                answer = input(f"Delete every ready message of {name!r}? Type the queue's name to confirm: ")
            except EOFError:
                raise CommandError("No answer (input closed); nothing deleted. --yes purges without asking.") from None
            if answer.strip() != name:
                raise CommandError("Not confirmed; nothing deleted.")
        self.stdout.write(f"Purged {queue_purge(queue=queue)} messages from {name!r}.")
