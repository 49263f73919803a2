"""The django-q2 schedules WonderQ needs, registered idempotently (on migrate and by `setup_schedules`)."""

from __future__ import annotations

from django.utils import timezone
from django_q.models import Schedule

SCHEDULES = {
    # name: (task, minutes between runs)
    "wonderq.sweep": ("queues.tasks.sweep", 1),
    "wonderq.snapshot": ("queues.tasks.snapshot", 1),
    "wonderq.prune": ("queues.tasks.prune_old", 15),
}


def schedules_setup() -> list[str]:
    """Create or correct WonderQ's schedules; returns the names created."""
    created = []
    for name, (func, minutes) in SCHEDULES.items():
        _, was_created = Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
            create_defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
                "next_run": timezone.now(),
            },
        )
        if was_created:
            created.append(name)
    return created
