"""Unloaded sweep of 1,000,000 expired leases, no HTTP: wall time and the backend's CPU.

Run from a checkout's root on a fresh, migrated database:
    DATABASE_URL=postgres://... python queues/static/queues/bench/before-after/queue-index/inprocess-sweep.py
"""

import datetime as dt
import json
import os
import sys
import time

import django

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wonderq_project.settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from queues.bench.data import expired_leases_create  # noqa: E402
from queues.management.commands.bench import cpu_calibration_ms, sweep_cpu_clock  # noqa: E402
from queues.models import Queue  # noqa: E402
from queues.services import leases_sweep  # noqa: E402

owner = User.objects.create(username="bench-owner")
queue = Queue.objects.create(name="sweep", owner=owner)
expired_leases_create(queue=queue, count=1_000_000, expired_at=timezone.now() - dt.timedelta(minutes=1))
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
calibration = cpu_calibration_ms()
_, clock = sweep_cpu_clock()
cpu_before, started = clock(), time.perf_counter()
result = leases_sweep()
wall, cpu = time.perf_counter() - started, clock() - cpu_before
print(json.dumps({"cal": calibration, "wall": round(wall, 2), "cpu": round(cpu, 2), "result": str(result)}))
