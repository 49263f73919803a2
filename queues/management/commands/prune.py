"""Delete what has outlived its retention."""

from django.core.management.base import BaseCommand

from queues.services.maintenance import prune


class Command(BaseCommand):
    help = (
        "Delete acked tombstones past WONDERQ_ACKED_RETENTION_SECONDS, delivery history of messages that are gone,"
        " snapshots past WONDERQ_SNAPSHOT_RETENTION_DAYS and decisions past WONDERQ_DECISION_RETENTION_DAYS."
    )

    def handle(self, *args, **options):
        result = prune()
        self.stdout.write(
            f"Pruned {result.acked} acked messages, {result.deliveries} delivery records, "
            f"{result.snapshots} snapshots, {result.decisions} decisions."
        )
