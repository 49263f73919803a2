"""Print every queue's live counts as a table."""

from django.core.management.base import CommandError
from django.utils import timezone

from queues.management.base import DatabaseCommand
from queues.models import Queue
from queues.services import queue_counts

COLUMNS = ("ready", "delayed", "leased", "review")


class Command(DatabaseCommand):
    help = "Show ready, delayed, leased and review counts and the oldest ready age of every queue."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="Only these queues (default: all).")

    def handle(self, *args, names, **options):
        queues = Queue.objects.order_by("name")
        if names:
            queues = queues.filter(name__in=names)
        queues = list(queues)
        unknown = sorted(set(names) - {queue.name for queue in queues})
        if unknown:
            raise CommandError(f"No queue named {', '.join(repr(name) for name in unknown)}.")
        counts = queue_counts(queue_ids=[q.id for q in queues], now=timezone.now())
        width = max([len("queue"), *(len(q.name) for q in queues)])
        self.stdout.write(f"{'queue':<{width}} " + " ".join(f"{c:>9}" for c in COLUMNS) + "  oldest ready")
        for queue in queues:
            row = counts[queue.id]
            age = row["oldest_ready_age_seconds"]
            self.stdout.write(
                f"{queue.name:<{width}} "
                + " ".join(f"{row[c]:>9}" for c in COLUMNS)
                + ("  -" if age is None else f"  {age:.0f}s")
            )
        if not queues:
            self.stdout.write("(no queues)")
