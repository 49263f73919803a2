"""Requeue review items in bulk, by queue, reason, consumer and age."""

import datetime as dt

from django.core.management.base import CommandError

from queues.management.base import DatabaseCommand
from queues.models import Message, Queue
from queues.services.bulk import review_catch_up, review_matching, review_requeue_matching

MAX_OLDER_THAN = 10 * 365 * 24 * 3600


class Command(DatabaseCommand):
    help = "Put review items back in their queues. Filters combine; --dry-run shows the count and a sample."

    def add_arguments(self, parser):
        parser.add_argument("--queue", help="Only this queue.")
        parser.add_argument("--reason", choices=Message.ReviewReason.values, help="Only items with this reason.")
        parser.add_argument("--consumer", help="Only items last held by this consumer label.")
        parser.add_argument("--older-than", type=int, metavar="SECONDS", help="Only items in review this long.")
        parser.add_argument("--delay", type=int, default=0, metavar="SECONDS", help="Delay before redelivery.")
        parser.add_argument("--note", default="", help="Kept with each decision.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would be requeued and change nothing else. Leases that have run out are first moved"
            " where their expiry takes them, as the scheduled sweep would (to review, or back to ready in a"
            " requeue queue), so the count is what a real run would requeue.",
        )

    def handle(self, *args, queue, reason, consumer, older_than, delay, note, dry_run, **options):
        if older_than is not None and not 0 <= older_than <= MAX_OLDER_THAN:
            raise CommandError(f"--older-than must be between 0 and {MAX_OLDER_THAN} (ten years)")
        if queue is not None and not Queue.objects.filter(name=queue).exists():
            raise CommandError(f"No queue named {queue!r}.")
        if not 0 <= delay <= 900:
            raise CommandError("--delay must be between 0 and 900")
        filters = {
            "queue": queue,
            "reason": reason,
            "consumer": consumer,
            "older_than": None if older_than is None else dt.timedelta(seconds=older_than),
        }
        if dry_run:
            review_catch_up(queue=queue)
            items = review_matching(**filters)
            self.stdout.write(f"{items.count()} review items match. A sample:")
            for item in items.select_related("queue")[:10]:
                self.stdout.write(
                    f"  #{item.id} queue={item.queue.name} reason={item.review_reason} "
                    f"consumer={item.consumer or '-'} receives={item.receive_count} body={item.body[:60]!r}"
                )
            return

        def progress(done):
            self.stderr.write(f"  {done} requeued so far")

        total = review_requeue_matching(
            actor="requeue_review command", delay_seconds=delay, note=note, progress=progress, **filters
        )
        self.stdout.write(f"Requeued {total} review items.")
