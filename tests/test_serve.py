"""End to end: `manage.py serve` on a fresh database runs the API and the scheduler with no manual step."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from queues.management.commands import serve
from tests import live

pytestmark = pytest.mark.slow


def _call(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served(tmp_path):
    """A `serve` process on a fresh database, as a new user would start it."""
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, DJANGO_DEBUG="1")
        env.pop("REDIS_URL", None)
        port = live.free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        args = [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        with live.process(args, env, f"{base}/health/") as server:
            yield server, base, live.manage(env, "create_token", "e2e").strip(), env


def test_serve__expired_lease_lands_in_review_with_no_manual_step(served):
    process, base, token, env = served
    assert _call(f"{base}/queues/", token, {"name": "e2e", "visibility_timeout": 1})[0] == 201
    assert _call(f"{base}/queues/e2e/messages/", token, {"body": "slow job"})[0] == 201
    status, received = _call(f"{base}/queues/e2e/receive/", token, {"consumer": "slow-worker"})
    assert status == 200 and len(received["messages"]) == 1
    leased_at = time.monotonic()

    # Wait for the scheduler to sweep it, looking at the row itself: the review list would move it
    # too, as it takes in leases run out since the last sweep. django-q2 checks schedules every
    # 30 s and the sweep is due every minute: 95 s bounds both.
    status_of = "from queues.models import Message; print(Message.objects.get().status)"
    while live.manage(env, "shell", "-v", "0", "-c", status_of).split()[-1] != "review":
        assert time.monotonic() - leased_at < 95, "the scheduled sweep did not move the expired lease to review"
        time.sleep(2)
    status, page = _call(f"{base}/queues/e2e/review/", token)
    items = page["results"]
    assert status == 200 and len(items) == 1
    assert items[0]["consumer"] == "slow-worker"
    assert items[0]["reason"] == "timeout"
    assert [d["outcome"] for d in items[0]["deliveries"]] == ["expired"]

    # Ctrl-C stops the web server and the scheduler together, cleanly.
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=40) == 0


def test_serve__a_chunked_body_answers_411_and_leases_nothing(served):
    """Without Content-Length Django would read the body as empty: a receive with defaults, a send of nothing."""
    _, base, token, _ = served
    assert _call(f"{base}/queues/", token, {"name": "chunked"})[0] == 201
    assert _call(f"{base}/queues/chunked/messages/", token, {"body": "waiting"})[0] == 201
    host, port = base.split("/")[2].split(":")
    body = json.dumps({"max_messages": 5, "visibility_timeout": 600, "consumer": "chunky"}).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(
        "POST",
        "/api/v1/queues/chunked/receive/",
        body=iter([body]),  # an iterable body goes out chunked
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 411
    assert json.loads(response.read())["code"] == "length_required"
    connection.close()
    status, queue = _call(f"{base}/queues/chunked/", token)
    assert (status, queue["ready"], queue["leased"]) == (200, 1, 0)


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs DATABASE_URL=postgres://...: serve runs gevent workers on PostgreSQL only",
)
def test_serve__gevent_worker_serves_more_long_polls_than_the_pool_has_connections(tmp_path):
    """On PostgreSQL `serve` runs gevent; a waiting long poll gives its connection back, so others go on."""
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, WONDERQ_DB_POOL_MIN="1", WONDERQ_DB_POOL_MAX="2")
        env.pop("REDIS_URL", None)
        port = live.free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        args = [sys.executable, "manage.py", "serve", "--no-scheduler", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        with live.process(args, env, f"{base}/health/", stderr=subprocess.PIPE, text=True) as server:
            token = live.manage(env, "create_token", "e2e").strip()
            assert _call(f"{base}/queues/", token, {"name": "polled"})[0] == 201

            polls: list[tuple[int, dict]] = []
            threads = [
                threading.Thread(
                    target=lambda: polls.append(
                        _call(f"{base}/queues/polled/receive/", token, {"wait_seconds": 4, "consumer": "poller"})
                    )
                )
                for _ in range(6)  # three times the pool
            ]
            for thread in threads:
                thread.start()
            time.sleep(1)  # every poll is waiting now
            started = time.monotonic()
            assert _call(f"{base}/queues/polled/messages/", token, {"body": "for a poller"})[0] == 201
            status, listing = _call(f"{base}/queues/", token)
            answered_in = time.monotonic() - started
            for thread in threads:
                thread.join(timeout=15)

            assert status == 200 and [q["name"] for q in listing] == ["polled"]
            # Had the six polls kept their connections, the send would wait for one until they end (3 s).
            assert answered_in < 2.0, f"send and list took {answered_in:.2f} s beside six long polls"
            assert sorted(code for code, _ in polls) == [200] * 6
            bodies = [m["body"] for _, body in polls for m in body["messages"]]
            assert bodies == ["for a poller"]
        stderr = server.stderr.read()
        assert "1 gevent workers x 100 connections" in stderr
        # The database's own warnings are given at startup (queues.checks).
        import psycopg

        with psycopg.connect(database_url) as conn:
            [(vacuums,)] = conn.execute(
                "SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on'"
            ).fetchall()
        assert ("queues.W001" in stderr) == (not vacuums), stderr[-2000:]


def _worker_class(database_url: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_DEBUG": "1", **extra}
    if "WONDERQ_WORKER_CLASS" not in extra:
        env.pop("WONDERQ_WORKER_CLASS", None)
    code = "from django.conf import settings; print(settings.WONDERQ_WORKER_CLASS)"
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=live.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [("sqlite:///{tmp}/db.sqlite3", "gthread"), ("postgres://nobody@127.0.0.1:1/none", "gevent")],
    ids=["sqlite-gthread", "postgresql-gevent"],
)
def test_worker_class__chosen_by_database(tmp_path, database_url, expected):
    # Reading the setting opens no connection, so the PostgreSQL URL need not lead anywhere.
    run = _worker_class(database_url.format(tmp=tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("gevent", "WONDERQ_WORKER_CLASS=gevent needs PostgreSQL"), ("sync", "must be gthread or gevent, got 'sync'")],
)
def test_worker_class__refused_where_it_would_stall_or_is_unknown(tmp_path, value, message):
    run = _worker_class(f"sqlite:///{tmp_path / 'db.sqlite3'}", WONDERQ_WORKER_CLASS=value)
    assert run.returncode != 0
    assert message in run.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WONDERQ_DECISION_RETENTION_DAYS", "-1", "WONDERQ_DECISION_RETENTION_DAYS must be 1 or more, got '-1'"),
        ("WONDERQ_SNAPSHOT_RETENTION_DAYS", "0", "WONDERQ_SNAPSHOT_RETENTION_DAYS must be 1 or more"),
        ("WONDERQ_MAX_BATCH", "-5", "WONDERQ_MAX_BATCH must be 0 or more"),
        ("WONDERQ_SWEEP_BATCH", "ten", "WONDERQ_SWEEP_BATCH must be a whole number, got 'ten'"),
        ("WONDERQ_SWEEP_BATCH", "0", "WONDERQ_SWEEP_BATCH must be 1 or more, got '0'"),
        ("WONDERQ_CLIENT_ADDRESS_HEADER", "X Real IP", "WONDERQ_CLIENT_ADDRESS_HEADER must be a header name"),
        ("WONDERQ_SWEEP_BATCH", "100001", "WONDERQ_SWEEP_BATCH must be at most 100000, got '100001'"),
    ],
)
def test_settings__a_bad_wonderq_number_is_refused_by_name(tmp_path, variable, value, message):
    """Before anything runs: a negative retention would make prune delete every decision."""
    run = _worker_class(f"sqlite:///{tmp_path / 'db.sqlite3'}", **{variable: value})
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr  # the message says what to set


def test_settings__the_client_address_header_is_named_as_sent(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1"}
    env["WONDERQ_CLIENT_ADDRESS_HEADER"] = "X-Forwarded-For"
    code = "from queues.conf import app_settings; print(app_settings.CLIENT_ADDRESS_HEADER)"
    run = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=live.ROOT, env=env, capture_output=True, text=True
    )
    assert run.stdout.strip().splitlines()[-1] == "HTTP_X_FORWARDED_FOR", run.stderr


def test_settings__no_secret_key_without_debug_says_so_without_a_traceback(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
    }
    env.pop("DJANGO_DEBUG", None)
    env.pop("DJANGO_SECRET_KEY", None)
    run = subprocess.run(
        [sys.executable, "manage.py", "queue_stats"], cwd=live.ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.startswith("manage.py: DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("variable", "flag"),
    [
        ("WONDERQ_WORKERS", "--workers"),
        ("WONDERQ_THREADS", "--threads"),
        ("WONDERQ_WORKER_CONNECTIONS", "--connections"),
    ],
)
def test_serve__a_bad_number_in_the_environment_is_named_like_a_bad_flag(tmp_path, variable, flag):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1", variable: "many"}
    run = subprocess.run(
        [sys.executable, "manage.py", "serve"], cwd=live.ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert f"argument {flag}: invalid int value: 'many'" in run.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # stopped before migrating anything


@pytest.mark.parametrize(
    ("flag", "env_value"),
    [
        *[(flag, None) for flag in ("", "127.0.0.1:99999", "127.0.0.1:-1", "host:notaport", "unix:")],
        *[(None, env_value) for env_value in ("127.0.0.1:99999", "localhost")],
    ],
)
def test_serve__a_bad_bind_is_refused_before_anything_starts(tmp_path, flag, env_value):
    """gunicorn would have printed a traceback after the migrate, or read an empty address as 0.0.0.0."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DJANGO_DEBUG": "1"}
    args = [sys.executable, "manage.py", "serve", "--no-scheduler"]
    if flag is not None:
        args += ["--bind", flag]
    if env_value is not None:
        env["WONDERQ_BIND"] = env_value
    run = subprocess.run(args, cwd=live.ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "argument --bind: " in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # stopped before migrating anything


def test_serve__an_empty_wonderq_bind_means_the_default_address(monkeypatch):
    monkeypatch.setenv("WONDERQ_BIND", "")
    parser = serve.Command().create_parser("manage.py", "serve")
    assert parser.parse_args([]).bind == "127.0.0.1:8000"


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "0.0.0.0:80", "[::1]:8000", "localhost:0", "unix:/run/wq.sock"])
def test_serve__bind_takes_what_gunicorn_listens_on(value):
    assert serve.bind_address(value) == value


def test_serve__no_migrate_starts_without_touching_the_database(tmp_path):
    """With --no-migrate, serve runs no database check either: it starts while the database is down."""
    unreachable = f"postgres://postgres@127.0.0.1:{live.free_port()}/nothing"  # nothing listens there
    env = live.project_env(unreachable, WONDERQ_DB_POOL_TIMEOUT="1")
    env.pop("REDIS_URL", None)
    port = live.free_port()
    args = [sys.executable, "manage.py", "serve", "--no-migrate", "--no-scheduler", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(args, cwd=live.ROOT, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline, answer = time.monotonic() + 30, None
        while answer is None and time.monotonic() < deadline and server.poll() is None:
            try:
                answer = _call(f"http://127.0.0.1:{port}/api/v1/health/")
            except OSError:
                time.sleep(0.2)
        assert answer == (503, {"status": "unavailable"}), server.stderr.read() if server.poll() is not None else answer
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=40)


requires_postgres_pool = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs DATABASE_URL=postgres://...: the connection pool is PostgreSQL's",
)


@contextlib.contextmanager
def _one_worker(tmp_path, **settings: str):
    """`serve` with one worker whose pool holds one connection (unless `settings` say otherwise), on a fresh
    database: (database URL, API base, key)."""
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, **{"WONDERQ_DB_POOL_MIN": "1", "WONDERQ_DB_POOL_MAX": "1", **settings})
        env.pop("REDIS_URL", None)
        port = live.free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        args = [sys.executable, "manage.py", "serve", "--no-scheduler", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        with live.process(args, env, f"{base}/health/"):
            yield database_url, base, live.manage(env, "create_token", "e2e").strip()


def _send_refused(base: str, queue: str, token: str, body: str) -> urllib.error.HTTPError:
    """A send that must be answered with an error: that answer."""
    request = urllib.request.Request(f"{base}/queues/{queue}/messages/", data=json.dumps({"body": body}).encode())
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Token {token}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    return refused.value


@requires_postgres_pool
def test_serve__a_request_that_waits_too_long_for_a_pooled_connection_answers_503_and_changes_nothing(tmp_path):
    import psycopg

    with _one_worker(tmp_path, WONDERQ_DB_POOL_TIMEOUT="1") as (database_url, base, token):
        assert _call(f"{base}/queues/", token, {"name": "busy"})[0] == 201
        with psycopg.connect(database_url) as blocker:
            # The send takes the pool's only connection and waits on this lock with it.
            blocker.execute("LOCK TABLE queues_message IN EXCLUSIVE MODE")
            sends: list[tuple[int, dict]] = []
            sender = threading.Thread(
                target=lambda: sends.append(_call(f"{base}/queues/busy/messages/", token, {"body": "held"}))
            )
            sender.start()
            time.sleep(0.5)
            refused = _send_refused(base, "busy", token, "turned away")
            blocker.commit()  # the lock goes; the held send goes on
        sender.join(timeout=10)

        assert refused.code == 503
        assert refused.headers["Retry-After"] == "1"
        assert json.loads(refused.read())["code"] == "busy"
        assert sends and sends[0][0] == 201
        status, received = _call(f"{base}/queues/busy/receive/", token, {"max_messages": 10})
        assert status == 200 and [m["body"] for m in received["messages"]] == ["held"]


@requires_postgres_pool
def test_serve__a_request_on_a_connection_the_database_ended_answers_503_and_the_next_one_works(tmp_path):
    """A restart or failover of PostgreSQL ends every session; a pooled connection used in the last
    WONDERQ_DB_CHECK_AFTER_IDLE seconds is lent unchecked, and its request was a 500 traceback."""
    import psycopg

    # The connection is lent unchecked however slow this machine is between the two requests.
    with _one_worker(tmp_path, WONDERQ_DB_CHECK_AFTER_IDLE="3600") as (database_url, base, token):
        assert _call(f"{base}/queues/", token, {"name": "restart"})[0] == 201
        assert _call(f"{base}/queues/restart/messages/", token, {"body": "before"})[0] == 201
        with psycopg.connect(database_url, autocommit=True) as admin:
            # As a restart does to every session: the pool's only connection is ended under it.
            ended = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t"
            ).fetchone()[0]
        assert ended >= 1  # the worker's pooled connection (and any other session of this database)
        refused = _send_refused(base, "restart", token, "cut off")
        assert refused.code == 503
        assert refused.headers["Retry-After"] == "1"
        assert json.loads(refused.read())["code"] == "unavailable"

        # The pool replaced the connection: the retry is sent, and the cut-off send was not.
        assert _call(f"{base}/queues/restart/messages/", token, {"body": "retried"})[0] == 201
        status, received = _call(f"{base}/queues/restart/receive/", token, {"max_messages": 10})
        assert status == 200 and [m["body"] for m in received["messages"]] == ["before", "retried"]


@requires_postgres_pool
def test_serve__after_the_database_ended_every_session_one_request_answers_503_not_one_per_pooled_connection(
    tmp_path,
):
    """Each pooled connection used to fail one request of its own after a restart: three 503s in a row here."""
    import psycopg

    pool = {"WONDERQ_DB_POOL_MIN": "3", "WONDERQ_DB_POOL_MAX": "3", "WONDERQ_DB_CHECK_AFTER_IDLE": "3600"}
    with _one_worker(tmp_path, **pool) as (database_url, base, token):
        assert _call(f"{base}/queues/", token, {"name": "failover"})[0] == 201
        for number in range(6):  # the pool lends its connections in turn: each is lent, so none is checked
            assert _call(f"{base}/queues/failover/messages/", token, {"body": f"before {number}"})[0] == 201
        with psycopg.connect(database_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t"
            ).fetchone()[0]
        assert ended >= 3

        refused = _send_refused(base, "failover", token, "cut off")
        retried = [_call(f"{base}/queues/failover/messages/", token, {"body": f"after {n}"})[0] for n in range(3)]
        status, received = _call(f"{base}/queues/failover/receive/", token, {"max_messages": 20})

    assert refused.code == 503 and json.loads(refused.read())["code"] == "unavailable"
    assert retried == [201, 201, 201]
    assert status == 200
    assert [m["body"] for m in received["messages"]] == [f"before {n}" for n in range(6)] + [
        f"after {n}" for n in range(3)
    ]


def test_scheduler__with_redis_down_keeps_its_statistics_to_itself_and_logs_no_redis_errors(tmp_path):
    """django-q2 wrote its cluster statistics to the default cache every 0.5 s: with Redis down
    each write logged the connection error (33 lines in 10 s)."""
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, REDIS_URL=f"redis://127.0.0.1:{live.free_port()}/0")
        live.manage(env, "migrate", "-v0")
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=live.ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(6)
            assert cluster.poll() is None
        finally:
            os.killpg(cluster.pid, signal.SIGINT)
            output = cluster.communicate(timeout=40)[0]
    assert "Q Cluster" in output and "running" in output, output[-2000:]
    assert "Connection refused" not in output and "Error 111" not in output, output[-2000:]
