"""The django-q2 schedules WonderQ needs, registered idempotently (on migrate and by `setup_schedules`)."""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone
from django_q.models import Schedule

SCHEDULES = {
    # name: (task, minutes between runs)
    "wonderq.sweep": ("queues.tasks.sweep", 1),
    "wonderq.snapshot": ("queues.tasks.snapshot", 1),
    "wonderq.prune": ("queues.tasks.prune_old", 15),
}

# Any fixed number: PostgreSQL's advisory locks are named by integers.
_SETUP_LOCK = 0x57514E44


def schedules_setup() -> list[str]:
    """Create or correct WonderQ's schedules, one of each name; returns the names created.

    Two processes may run this at once (two `serve` starting together each migrate), and
    django-q2 does not make a schedule's name unique: they take turns, on PostgreSQL by an
    advisory lock, on SQLite by its write lock, so the second finds what the first made. A
    schedule of the same name added by hand (the admin allows it) is deleted, so each task runs once a turn.
    """
    created = []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SETUP_LOCK])
        for name, (func, minutes) in SCHEDULES.items():
            wanted = {"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1}
            rows = list(Schedule.objects.filter(name=name).order_by("id"))
            if not rows:
                Schedule.objects.create(name=name, next_run=timezone.now(), **wanted)
                created.append(name)
                continue
            first, *extra = rows
            if extra:
                Schedule.objects.filter(id__in=[row.id for row in extra]).delete()
            if any(getattr(first, field) != value for field, value in wanted.items()):
                for field, value in wanted.items():
                    setattr(first, field, value)
                first.save(update_fields=list(wanted))
    return created
