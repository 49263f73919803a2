"""Register WonderQ's django-q2 schedules (migrate does this too)."""

from django.core.management.base import BaseCommand

from queues.schedules import SCHEDULES, schedules_setup


class Command(BaseCommand):
    help = "Create or correct the sweep, snapshot and prune schedules. Safe to run any number of times."

    def handle(self, *args, **options):
        created = schedules_setup()
        for name, (func, minutes) in SCHEDULES.items():
            state = "created" if name in created else "up to date"
            self.stdout.write(f"{name}: {func} every {minutes} min ({state})")
