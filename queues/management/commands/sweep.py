"""Run the expiry sweep once (the scheduler runs the same service every minute)."""

from django.core.management.base import CommandError

from queues.management.base import DatabaseCommand
from queues.services import leases_sweep


class Command(DatabaseCommand):
    help = "Move every expired lease to REVIEW (or back to READY in requeue queues), in bounded batches."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per transaction (default 10,000).")

    def handle(self, *args, batch_size, verbosity, **options):
        if batch_size is not None and not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000")

        def progress(result):
            if verbosity > 0:
                self.stderr.write(f"  batch {result.batches}: {result.total} moved so far")

        result = leases_sweep(batch_size=batch_size, progress=progress)
        self.stdout.write(
            f"Swept {result.total} expired leases in {result.batches} batches: "
            f"{result.review} to review, {result.ready} back to ready."
        )
