"""The gunicorn command line that `serve` and `bench` both start."""

from __future__ import annotations

import sys

# WonderQ's gevent worker shares connections out evenly between workers; gthread is gunicorn's own.
WORKER_CLASSES = {"gevent": "wonderq_project.workers.GeventWorker"}


def per_worker(*, worker_class: str, threads: int, connections: int) -> str:
    """How many requests a worker serves at once, as the commands report it."""
    return f"{connections} connections" if worker_class == "gevent" else f"{threads} threads"


def gunicorn_command(*, bind: str, workers: int, worker_class: str, threads: int, connections: int) -> list[str]:
    """gunicorn serving the project's WSGI app: `threads` per gthread worker, or `connections` per gevent one.

    A gevent worker patches the standard library before it loads the app, so nothing of ours but
    wonderq_project.workers (no Django) is imported in gunicorn's master (no --preload). Other
    classes (`sync`, for comparison in `bench`) are gunicorn's own.
    """
    per_worker = ["--worker-connections", str(connections)] if worker_class == "gevent" else ["--threads", str(threads)]
    # No control socket: gunicorn's default is one path per user ($HOME/.gunicorn/gunicorn.ctl), so
    # two servers on one host (several `serve --no-scheduler`, a `bench` beside a `serve`) took it
    # from each other, and the first to stop removed the other's. Nothing here uses it.
    return [
        sys.executable, "-m", "gunicorn", "wonderq_project.wsgi:application", "--bind", bind,
        "--workers", str(workers), "--worker-class", WORKER_CLASSES.get(worker_class, worker_class), *per_worker,
        "--no-control-socket",
    ]  # fmt: skip
