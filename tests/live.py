"""Run the project as a user would, in subprocesses: a fresh database, manage.py, a real gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def fresh_database(tmp_path: Path) -> Iterator[str]:
    """A DATABASE_URL for an empty database of the engine under test (SQLite file, or a new PostgreSQL db)."""
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'live.sqlite3'}"
        return
    import psycopg

    parts = urlsplit(configured)
    name = f"wonderq_live_{uuid.uuid4().hex[:12]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def project_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "live-test-secret-key-0123456789",
        "DJANGO_DEBUG": "0",
        **extra,
    }
    return env


def manage(env: dict, *args: str) -> str:
    """Run a management command; its stdout."""
    run = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@contextlib.contextmanager
def process(args: list[str], env: dict, health_url: str, **popen) -> Iterator[subprocess.Popen]:
    """A server process in its own session, stopped (SIGINT, then SIGKILL) when the block ends."""
    child = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True, **popen)
    try:
        wait_for(health_url)
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


@contextlib.contextmanager
def gunicorn(env: dict, *, workers: int = 2) -> Iterator[str]:
    """gunicorn serving the project; yields the API base URL."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "wonderq_project.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    with process(args, env, f"{base}/health/"):
        yield base
