"""Run the whole service: migrate, then the web server (gunicorn) and the scheduler (django-q2) together."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.checks import Tags
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from queues.management.gunicorn import gunicorn_command, per_worker


def bind_address(value: str) -> str:
    """An address gunicorn can listen on: HOST:PORT, [IPV6]:PORT or unix:PATH (argparse type)."""
    if value.startswith("unix:"):
        if len(value) > len("unix:"):
            return value
        raise argparse.ArgumentTypeError("unix: needs a socket path, e.g. unix:/run/wonderq.sock")
    host, colon, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (colon and host and port.isascii() and port.isdigit() and int(port) <= 65535) or any(
        c.isspace() or c in "[]/" for c in host
    ):
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (a port 0-65535) or unix:PATH")
    return value


class Command(BaseCommand):
    help = (
        "Migrate the database, then run gunicorn and the django-q2 cluster (expiry sweep, stats, pruning) "
        "side by side. Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        # String defaults from the environment go through `type` like a flag would, so a bad
        # WONDERQ_THREADS is reported as "argument --threads: invalid int value".
        # An empty WONDERQ_BIND (an env file's `WONDERQ_BIND=`) means the default: gunicorn would
        # read an empty address as 0.0.0.0, every interface.
        parser.add_argument(
            "--bind",
            type=bind_address,
            default=os.environ.get("WONDERQ_BIND") or "127.0.0.1:8000",
            help="HOST:PORT, [IPV6]:PORT or unix:PATH (default 127.0.0.1:8000)",
        )
        parser.add_argument("--workers", type=int, default=os.environ.get("WONDERQ_WORKERS", "2"))
        parser.add_argument(
            "--threads",
            type=int,
            default=os.environ.get("WONDERQ_THREADS", "8"),
            help="Threads per gthread worker (SQLite); long-polling receives each hold one while they wait.",
        )
        parser.add_argument(
            "--connections",
            type=int,
            default=os.environ.get("WONDERQ_WORKER_CONNECTIONS", "100"),
            help="Requests a gevent worker (PostgreSQL) serves at once, long polls included.",
        )
        parser.add_argument("--no-scheduler", action="store_true", help="Run the web server only.")
        parser.add_argument("--no-migrate", action="store_true", help="Skip migrate.")

    def handle(self, *args, bind, workers, threads, connections, no_scheduler, no_migrate, verbosity, **options):
        if min(workers, threads, connections) < 1:
            raise CommandError("--workers, --threads and --connections must be at least 1")
        worker_class = settings.WONDERQ_WORKER_CLASS
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
            # What only the database can tell (queues.checks: autovacuum off on PostgreSQL). Not with
            # --no-migrate: that serve starts without touching the database, as it always has.
            self.check(databases=[DEFAULT_DB_ALIAS], tags=[Tags.database])
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands = {
            "web": [
                *gunicorn_command(
                    bind=bind, workers=workers, worker_class=worker_class, threads=threads, connections=connections
                ),
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "25",
            ],
        }
        if not no_scheduler:
            commands["scheduler"] = [*manage, "qcluster"]
        # Our own interpreter and fixed arguments: nothing here comes from a request.
        children = {name: subprocess.Popen(cmd, cwd=settings.BASE_DIR) for name, cmd in commands.items()}  # noqa: S603
        each = per_worker(worker_class=worker_class, threads=threads, connections=connections)
        self.stderr.write(
            f"WonderQ on http://{bind}/ (API /api/v1/, admin /admin/), {workers} {worker_class} workers x {each}; "
            "Ctrl-C stops."
        )

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with status {child.returncode}; stopping the rest.")
                        exit_code = child.returncode or 1
                        stopping = True
                time.sleep(0.2)
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        if exit_code:
            raise CommandError(f"stopped because a process exited with status {exit_code}")
        self.stderr.write("Stopped.")
