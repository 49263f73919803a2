"""Delete what has outlived its retention."""

from queues.management.base import DatabaseCommand
from queues.services.maintenance import prune


class Command(DatabaseCommand):
    help = (
        "Delete acked tombstones past WONDERQ_ACKED_RETENTION_SECONDS, delivery history of messages that are gone,"
        " snapshots past WONDERQ_SNAPSHOT_RETENTION_DAYS, and review decisions past"
        " WONDERQ_DECISION_RETENTION_DAYS only when it is set (they are kept by default)."
    )

    def handle(self, *args, verbosity, **options):
        def progress(result):
            if verbosity > 0:
                self.stderr.write(
                    f"  so far: {result.acked} acked messages, {result.deliveries} delivery records, "
                    f"{result.snapshots} snapshots, {result.decisions} decisions"
                )

        result = prune(progress=progress)
        self.stdout.write(
            f"Pruned {result.acked} acked messages, {result.deliveries} delivery records, "
            f"{result.snapshots} snapshots, {result.decisions} decisions."
        )
