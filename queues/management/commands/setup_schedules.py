"""Register WonderQ's django-q2 schedules (migrate does this too)."""

from queues.management.base import DatabaseCommand
from queues.schedules import SCHEDULES, schedules_setup


class Command(DatabaseCommand):
    help = "Create or correct the sweep, snapshot and prune schedules. Safe to run any number of times."

    def handle(self, *args, **options):
        created = schedules_setup()
        for name, (func, minutes) in SCHEDULES.items():
            state = "created" if name in created else "up to date"
            self.stdout.write(f"{name}: {func} every {minutes} min ({state})")
