"""Smoke run of `manage.py bench`: it must keep working end to end (how fast is not asserted here)."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from queues.bench import load
from queues.bench.data import expired_leases_create
from queues.management.commands import bench
from queues.management.commands.bench import (
    _is_local_host,
    _postgresql_settings,
    cpu_shares,
    cpu_times,
    sweep_cpu_clock,
)
from queues.models import Message
from queues.services import queue_create
from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parent.parent


def _bench_env(tmp_path: Path) -> dict[str, str]:
    """bench in a process of its own, over a SQLite file of its own."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "wonderq_project.settings",
        "DJANGO_SECRET_KEY": "bench-smoke-test-key",
        "DJANGO_DEBUG": "0",
    }
    env.pop("REDIS_URL", None)
    return env


@pytest.mark.slow
def test_bench__short_run_reports_throughput_latency_memory_and_sweep(tmp_path):
    env = _bench_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "manage.py", "bench", "--duration", "2", "--batch", "1,10", "--sweep", "2000",
         "--producers", "1", "--consumers", "1", "--output", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    [report] = (tmp_path / "out").glob("bench-sqlite-*.json")
    written = json.loads(report.read_text())
    results = written["results"]
    assert written["meta"]["machine"]["cpu_model"] and written["meta"]["machine"]["kernel"]
    assert [r["batch"] for r in results] == [1, 10]
    for r in results:
        assert r["sent"] > 0 and r["acked"] > 0 and r["errors"] == 0, r
        for op in ("send", "receive", "ack"):
            latency = r["latency_ms"][op]
            assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"], (op, latency)
        assert r["server_rss_mib"] > 0 and r["cpu_calibration_ms"] > 0 and r["ipc_calibration_us"] > 0
        shares = r["machine_cpu_pct"]
        assert 99 <= sum(shares.values()) <= 101 and shares["user"] > 0, shares  # the run kept a CPU busy
    sweep = results[0]["sweep"]
    assert sweep["leases"] == 2000 and sweep["cpu_of"] == "the sweeping thread"
    assert 0 < sweep["cpu_seconds"] <= sweep["seconds"] + 0.02, sweep  # one thread: no more CPU than wall time
    assert "s of CPU in the sweeping thread" in run.stdout
    assert [p.suffix for p in sorted((tmp_path / "out").iterdir())] == [".json", ".svg"]
    assert "| batch | sent msg/s |" in run.stdout


def test_cpu_shares__split_the_machines_time_between_two_readings():
    """What the whole machine did during a run: this process spinning shows as busy time."""
    started, before = time.perf_counter(), cpu_times()
    while time.perf_counter() - started < 0.3:  # one CPU kept busy for 0.3 s
        pass
    shares, wall = cpu_shares(before, cpu_times()), time.perf_counter() - started

    assert set(shares) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert 99 <= sum(shares.values()) <= 101, shares
    # Time the hypervisor gave to others while this CPU wanted to run counts as busy: it was not idle.
    busy = 100 - shares["idle"] - shares["iowait"]
    # That CPU's share of all CPUs' time (less a tick or two: the kernel counts in ticks of 10 ms).
    assert busy >= 0.7 * 100 * 0.3 / (os.cpu_count() * wall), (shares, wall)
    assert cpu_shares(before, before) is None  # no time passed: nothing to split


@requires_postgres
@pytest.mark.django_db
def test_sweep_cpu_clock__reads_the_cpu_time_of_this_connections_postgresql_backend():
    """The sweep's CPU is spent in the server process; the clock must follow that process, not ours."""
    where, clock = sweep_cpu_clock()
    before, ours = clock(), os.times()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM generate_series(1, 3000000)")
    spent, ours_spent = clock() - before, os.times().user - ours.user

    assert where == "its PostgreSQL backend"
    assert spent >= 0.05, spent  # a few hundred ms of work on the server
    assert spent > 3 * ours_spent, (spent, ours_spent)  # and not in this process


@pytest.mark.parametrize(
    ("host", "local"),
    [("", True), ("/var/run/postgresql", True), ("127.0.0.1", True), ("localhost", True), ("::1", True),
     ("db.internal", False), ("10.0.0.5", False)],
)  # fmt: skip
def test_is_local_host__loopback_and_sockets_only(host, local):
    """/proc shows the backend only for a server on this machine; elsewhere the sweep's CPU is not reported."""
    assert _is_local_host(host) is local


@requires_postgres
@pytest.mark.django_db
def test_postgresql_settings__recorded_with_the_figures_they_move():
    recorded = _postgresql_settings()
    assert {"autovacuum", "track_counts", "shared_buffers", "synchronous_commit"} <= set(recorded)
    with connection.cursor() as cursor:
        for name, value in recorded.items():  # each as PostgreSQL shows it
            cursor.execute(f"SHOW {name}")
            assert cursor.fetchone()[0] == value, name


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([1, 2, 3, 4, 5], 0.5, 3), (list(range(1, 10)), 0.5, 5), ([1, 2, 3, 4], 0.5, 2),
     (list(range(1, 1071)), 0.99, 1060), (list(range(1, 1001)), 0.999, 999), ([7], 0.999, 7),
     ([3, 1], 0.0, 1), ([3, 1], 1.0, 3)],
)  # fmt: skip
def test_percentile__nearest_rank(values, fraction, expected):
    """The ceil(fraction * n)-th smallest value; round() took 2.5 and 4.5 down (half to even)."""
    assert load.percentile(values, fraction) == expected


def test_percentile__of_nothing_is_none():
    assert load.percentile([], 0.5) is None


@contextmanager
def _raw_server(answer: bytes | None):
    """A server that answers every request with `answer`, as is, or closes the connection at once (None).

    The load's client must count what such a server does as an error and go on, not end the run.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn):
        with conn:
            while conn.recv(65536) and answer is not None:
                conn.sendall(answer)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener closed: the test is over
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1"
    finally:
        listener.close()


def _http(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


_NOT_HTTP = [
    (None, "_Closed"),  # closed before answering, and again on the retry
    (b"garbage\r\n\r\n", "IndexError"),  # no status line
    (b"HTTP/1.1 OK\r\n\r\n", "ValueError"),  # a status that is not a number
]
_NOT_WHAT_SEND_ANSWERS = [
    (_http("201 Created", b"<html>busy</html>"), "JSONDecodeError"),  # a proxy's page
    (_http("201 Created", b'{"id": 1}'), "KeyError"),  # JSON of another shape
    (_http("201 Created", b"[]"), "TypeError"),
]
_NOT_WHAT_RECEIVE_ANSWERS = [
    (_http("200 OK", b"<html>busy</html>"), "JSONDecodeError"),
    (_http("200 OK", b'{"messages": [{"id": 1}]}'), "KeyError"),
    (_http("200 OK", b"[]"), "TypeError"),
]


@pytest.mark.parametrize(
    ("loop", "answer", "error"),
    [(load.produce, *case) for case in _NOT_HTTP + _NOT_WHAT_SEND_ANSWERS]
    + [(load.consume, *case) for case in _NOT_HTTP + _NOT_WHAT_RECEIVE_ANSWERS],
    ids=lambda value: value.__name__ if callable(value) else value if isinstance(value, str) else "",
)
def test_load__a_broken_connection_or_answer_is_counted_as_an_error_not_raised(loop, answer, error):
    """Before, each of these raised out of the loop and ended the whole batch with a traceback."""
    with _raw_server(answer) as base:
        tally = loop(base, "t", "q", 1, 0.1)

    assert tally.errors > 0 and tally.sent == tally.acked == 0, tally
    assert error in tally.error_samples[0], tally.error_samples


@pytest.fixture
def nothing_runs(monkeypatch):
    """A refusal must come before bench migrates, starts a server or makes a request: any of them fails the test."""

    def reached(*args, **kwargs):
        raise AssertionError("bench went past its checks")

    monkeypatch.setattr(bench, "call_command", reached)
    monkeypatch.setattr(bench.Command, "_start_server", reached)
    monkeypatch.setattr(bench.urllib.request, "urlopen", reached)
    monkeypatch.setattr(bench.load, "Client", reached)


def _refuses(tmp_path, *args, match: str) -> None:
    """bench with `args` stops with a CommandError matching `match`, and leaves no trace (not even its folder)."""
    with pytest.raises(CommandError, match=match):
        call_command("bench", "--output", str(tmp_path / "out"), "--duration", "1", *args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--duration", "nan"], "--duration"),  # NaN passed `<= 0`, and went into the JSON
        (["--duration", "inf"], "--duration"),  # a run that never ends
        (["--duration", "-inf"], "--duration"),
        (["--duration", "0"], "--duration"),
        (["--duration", "86401"], "--duration"),
        (["--batch", "1,10,1"], "--batch 1,10,1 names a batch size twice"),  # ran and reported twice
        (["--batch", "0"], "between 1 and 100"),
        (["--batch", "1,x"], "--batch"),
        (["--runs", "0"], "--runs"),
    ],
)
def test_bench__a_bad_duration_or_batch_list_is_refused_before_anything_runs(tmp_path, nothing_runs, args, match):
    _refuses(tmp_path, *args, match=match)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--sweep", "-5"], "--sweep must be between 0 and 10,000,000"),  # inserted one lease
        (["--sweep", "10000001"], "--sweep must be between 0 and 10,000,000"),
        (["--backlog", "-5"], "--backlog must be between 0 and 10,000,000"),
        (["--backlog", "10000001"], "--backlog must be between 0 and 10,000,000"),
        (
            ["--url", "http://127.0.0.1:1/api/v1", "--token", "t", "--sweep", "1000"],
            "--sweep .* cannot be used with --url",
        ),
    ],
)
def test_bench__a_bad_sweep_or_backlog_is_refused_before_anything_runs(tmp_path, nothing_runs, args, match):
    """--sweep was silently ignored with --url, and a negative one inserted a lease; a negative backlog sent none."""
    _refuses(tmp_path, *args, match=match)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--workers", "4"], "--workers set up the server bench starts"),
        (["--threads", "8"], "--threads set up"),
        (["--connections", "10"], "--connections set up"),
        (["--worker-class", "sync"], "--worker-class set up"),
        (["--workers", "2", "--worker-class", "gthread"], "--workers, --worker-class set up"),  # even the defaults
    ],
)
def test_bench__server_options_with_url_are_refused_before_anything_runs(tmp_path, nothing_runs, args, match):
    """They were accepted and ignored: the run measured someone else's server as the user had not asked."""
    _refuses(tmp_path, "--url", "http://127.0.0.1:1/api/v1", "--token", "t", *args, match=match)


def test_bench__a_token_without_url_is_refused_before_anything_runs(tmp_path, nothing_runs):
    """It was ignored: bench made its own token for its own server."""
    _refuses(tmp_path, "--token", "t", match="--token is for --url")


@pytest.mark.parametrize("count", [1, 99, 100, 150, 250])
def test_backlog__sends_exactly_the_number_asked(monkeypatch, count):
    """It sent whole batches of 100: a backlog of 150 was 200 messages."""
    sent = []

    class Client:
        def __init__(self, base, token):
            pass

        def post(self, path, body):
            sent.append(len(body["messages"]))
            return 201, {"ids": []}, 0.0

    monkeypatch.setattr(load, "Client", Client)
    bench.Command(stdout=io.StringIO(), stderr=io.StringIO())._backlog("q", count, "http://x/api/v1", "t")

    assert sum(sent) == count and max(sent) <= 100, sent


@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, -5])
def test_expired_leases_create__a_count_below_one_creates_none(user, count):
    """The recursive sequence always holds its first row: a count of 0 or less inserted one lease."""
    queue = queue_create(name="sweep", owner=user)

    expired_leases_create(queue=queue, count=count, expired_at=timezone.now())

    assert not Message.objects.filter(queue=queue).exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--worker-class", "sync", "--threads", "4"], "sync serves one request at a time per worker: --threads must"),
        pytest.param(
            ["--worker-class", "gevent"],
            "gevent needs PostgreSQL",
            marks=pytest.mark.skipif(
                os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
                reason="gevent is refused on SQLite only; these tests run on PostgreSQL",
            ),
        ),
        (["--worker-class", "eventlet"], "invalid choice: 'eventlet'"),  # found only after migrate, by gunicorn
    ],
)
def test_bench__a_worker_class_it_would_not_run_as_reported_is_refused(tmp_path, nothing_runs, args, match):
    """gunicorn turns sync with threads into gthread, but the report said sync; README: gevent is refused on SQLite."""
    _refuses(tmp_path, *args, match=match)


@pytest.mark.parametrize(("args", "threads"), [(["--worker-class", "sync"], 1), (["--worker-class", "gthread"], 4)])
def test_bench__threads_default_to_what_the_worker_class_runs(tmp_path, monkeypatch, args, threads):
    """A sync worker has one thread, so `--worker-class sync` alone is not refused for the gthread default of 4."""
    started = []

    def start_server(self, opts):
        started.append(opts)
        raise CommandError("stopped here")

    monkeypatch.setattr(bench, "call_command", lambda *args, **kwargs: None)  # no migrate
    monkeypatch.setattr(bench.Command, "check", lambda self, **kwargs: None)
    monkeypatch.setattr(bench.Command, "_start_server", start_server)
    with pytest.raises(CommandError, match="stopped here"):
        call_command("bench", *args, "--output", str(tmp_path / "out"))

    assert [opts["threads"] for opts in started] == [threads]


@contextmanager
def _fake_api(answers: dict[tuple[str, str], tuple[int, bytes]], family: int = socket.AF_INET):
    """An HTTP/1.1 server answering (method, path) with (status, body); the Host headers it saw, in a list."""
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load's client expects

        def answer(self):
            hosts.append(self.headers["Host"])
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = answers.get((self.command, self.path), (404, b"<h1>Not Found</h1>"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
    server = server_class(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    host = "[::1]" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        yield f"http://{host}:{server.server_address[1]}/api/v1", hosts
    finally:
        server.shutdown()
        server.server_close()


_HEALTHY = {("GET", "/api/v1/health/"): (200, b'{"status": "ok"}')}


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("abc", "plain HTTP only"),  # dialled localhost:80
        ("https://127.0.0.1:8443/api/v1", "plain HTTP only"),  # was spoken to in plain HTTP
        ("http://127.0.0.1:notaport/api/v1", "Port could not be cast"),  # ValueError traceback
        ("http://127.0.0.1:70000/api/v1", "Port out of range"),
        ("http://::1:8000/api/v1", "Port could not be cast"),  # an IPv6 address without its brackets
        ("http://[::1/api/v1", "Invalid IPv6 URL"),
        ("http:///api/v1", "give a host and a port"),
        ("http://127.0.0.1:0/api/v1", "give a host and a port"),
        ("http://user:key@127.0.0.1:8000/api/v1", "give the base URL only"),
    ],
)
def test_bench__a_malformed_url_is_refused_before_anything_runs(tmp_path, nothing_runs, url, match):
    _refuses(tmp_path, "--url", url, "--token", "t", match=f"--url .*{match}")


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        ({}, "no WonderQ health answer .*ConnectionRefusedError"),  # nothing listening (the server is stopped)
        ({("GET", "/api/v1/health/"): (200, b"<html>a proxy's page</html>")}, "no WonderQ health answer"),
        ({("GET", "/api/v1/health/"): (200, b'{"status": "unavailable"}')}, "not WonderQ's"),
        ({("GET", "/api/v1/health/"): (503, b'{"status": "unavailable"}')}, "answered 503"),
        ({("GET", "/health/"): (200, b'{"status": "ok"}')}, "answered 404 .*/api/v1"),  # not the API's base path
    ],
)
def test_bench__a_url_that_is_not_a_wonderq_api_is_refused_before_anything_runs(tmp_path, monkeypatch, answers, match):
    """One GET of {url}/health/ first: a refused connection was a traceback, an HTML page a JSONDecodeError."""
    monkeypatch.setattr(bench.load, "Client", lambda *args: pytest.fail("the load started"))
    with _fake_api(answers) as (base, _):
        if not answers:
            base = "http://127.0.0.1:1/api/v1"
        _refuses(tmp_path, "--url", base, "--token", "t", match=f"--url: .*{match}")


def test_client__names_an_ipv6_host_in_brackets_in_its_host_header():
    """`Host: ::1:8000` is not a valid header (Django answers 400); `[::1]:8000` is."""
    with _fake_api({("POST", "/api/v1/queues/"): (201, b"{}")}, family=socket.AF_INET6) as (base, hosts):
        status, _, _ = load.Client(base, "t").post("/queues/", {"name": "q"})

    assert status == 201 and hosts == [f"[::1]:{urlsplit(base).port}"]


def test_bench__a_wrong_token_stops_the_run_before_any_load(tmp_path, monkeypatch):
    """The answer to creating the run's queue was ignored: a wrong --token ran, exited 0 and reported only errors."""
    monkeypatch.setattr(bench, "ProcessPoolExecutor", lambda **kwargs: pytest.fail("the load started"))
    answers = {**_HEALTHY, ("POST", "/api/v1/queues/"): (401, b'{"detail": "Invalid token.", "code": "auth"}')}
    with _fake_api(answers) as (base, _), pytest.raises(CommandError, match=r"answered 401: .*Invalid token"):
        call_command("bench", "--url", base, "--token", "wrong", "--output", str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((201, b'{"name": "q"}'), None),
        ((409, b'{"detail": "A queue named \'q\' already exists."}'), None),  # a run in the same second made it
        ((403, b'{"detail": "no"}'), "answered 403"),
        ((404, b"<h1>Not Found</h1>"), "failed: JSONDecodeError"),  # a path that is not the API's
        ((500, b"<h1>Server Error (500)</h1>"), "failed: JSONDecodeError"),
    ],
)
def test_remote_queue_create__takes_201_or_409_and_refuses_anything_else(answer, error):
    with _fake_api({("POST", "/api/v1/queues/"): answer}) as (base, _):
        if error is None:
            bench._remote_queue_create(base, "t", "q")
        else:
            with pytest.raises(CommandError, match=f"creating queue q at {base} {error}"):
                bench._remote_queue_create(base, "t", "q")


def _output_cases(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "a-file").write_text("")
    return [(str(tmp_path / "a-file"), "File exists"), (str(tmp_path / "a-file" / "out"), "Not a directory")]


def test_bench__an_output_that_cannot_hold_the_results_is_refused_before_anything_runs(tmp_path, nothing_runs):
    """A file, or a path through one, was found only after the whole run: a traceback, the results lost."""
    for output, reason in _output_cases(tmp_path):
        _refuses(tmp_path, "--output", output, match=re.escape(f"--output {output}: {reason}"))


def test_bench__an_output_folder_without_write_permission_is_refused(tmp_path, nothing_runs, monkeypatch):
    """Faked: these tests run as root, who may write anywhere."""
    monkeypatch.setattr(bench.os, "access", lambda path, mode: False)
    with pytest.raises(CommandError, match=r"--output .*: the folder is not writable"):
        call_command("bench", "--output", str(tmp_path))


def _result(batch: int = 1, **memory) -> dict:
    """One batch's result as _phase makes it, with no requests answered."""
    return {
        "batch": batch, "sent": 0, "acked": 0, "sent_per_s": 0.0, "acked_per_s": 0.0, "errors": 3,
        "latency_ms": {op: {"p50": None, "p99": None, "p999": None, "max": None, "requests": 0}
                       for op in ("send", "receive", "ack")},
        "error_samples": ["send: ConnectionRefusedError()"],
        **(memory or bench._memory_summary([])),
    }  # fmt: skip


_OPTS = {"workers": 2, "threads": 4, "connections": 100, "producers": 1, "consumers": 1, "worker_class": "gthread",
         "runs": 1, "duration": 2.0, "backlog": 0, "url": None}  # fmt: skip


@pytest.mark.django_db
def test_write__when_the_files_cannot_be_written_the_table_is_printed_first(tmp_path):
    """The folder checked at the start can go during a run: the figures must not go with it."""
    (tmp_path / "out").write_text("")  # the folder replaced by a file
    out = io.StringIO()
    with pytest.raises(CommandError, match=re.escape(f"--output {tmp_path / 'out'}: the results could not be written")):
        bench.Command(stdout=out, stderr=io.StringIO())._write([_result()], {**_OPTS, "output": str(tmp_path / "out")})

    assert (
        "| batch | sent msg/s |" in out.getvalue() and "error sample: send: ConnectionRefusedError()" in out.getvalue()
    )


def _descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    children, found, stack = bench.process_children(), {}, [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            with contextlib.suppress(OSError):
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stack.append(child)
    return found


def _alive(pid: int, cmdline: str) -> bool:
    """Whether that process still runs (a zombie has ended; the same pid with another command is another process)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        now = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError):
        return False
    return state != "Z" and now == cmdline


@contextmanager
def _bench_running(tmp_path: Path):
    """bench (one batch of 2 s) in its own process, yielded once its load runs, with its processes then.

    Whatever is left of them at the end is killed, so a failing test leaves no gunicorn behind.
    """
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "bench", "--duration", "2", "--batch", "1", "--producers", "1",
         "--consumers", "1", "--output", str(tmp_path / "out")],
        cwd=ROOT, env=_bench_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    processes: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("batch 1:") for line in stderr):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(stderr)[-2000:]
            time.sleep(0.1)
        # Past the calibrations (a fixed loop: slower on a busy machine), into the load.
        while not any("multiprocessing" in cmd or "manage.py bench" in cmd for cmd in processes.values()):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(stderr)[-2000:]
            time.sleep(0.1)
            processes = _descendants(proc.pid)
        assert any("gunicorn" in cmd for cmd in processes.values()), processes
        yield proc, processes, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid in {**processes, **_descendants(proc.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)


def _gone(processes: dict[int, str], within: float = 5) -> list[str]:
    """The processes still alive after `within` seconds."""
    deadline = time.monotonic() + within
    while (left := [cmd for pid, cmd in processes.items() if _alive(pid, cmd)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_bench__sigterm_stops_gunicorn_and_the_load(tmp_path):
    """SIGTERM's default ended bench at once: gunicorn and the load's processes lived on."""
    with _bench_running(tmp_path) as (proc, processes, stderr):
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)

        assert _gone(processes) == []
        assert returncode == 143 and "CommandError: stopped by SIGTERM" in "".join(stderr), "".join(stderr)[-2000:]


def test_await_server__a_gunicorn_that_exits_at_once_is_reported_at_once(tmp_path):
    """It was polled over HTTP for 30 s before "did not start", its exit status unsaid."""
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"gunicorn exited with status 3 before it answered"):
        bench.Command(stdout=io.StringIO(), stderr=io.StringIO())._await_server(
            server, "http://127.0.0.1:1/api/v1", {"workers": 2, "worker_class": "gthread", "threads": 4}
        )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("samples", "growth"),
    [
        ([(1.0, 175316, 134617), (2.0, 0, 0)], 0.0),  # the server gone by the second sample: was -100.0
        ([(1.0, 0, 0), (2.0, 2000, 1000), (20.0, 2200, 1100)], pytest.approx(10.0)),  # not readable yet at first
        ([(1.0, 2000, 1000), (3.0, 2000, 1000), (20.0, 2200, 1100), (21.0, 0, 0)], pytest.approx(10.0)),
        ([(1.0, 0, 0), (2.0, 0, 0)], None),
    ],
)
def test_memory_summary__a_sample_that_read_nothing_is_left_out(samples, growth):
    assert bench._memory_summary(samples)["server_pss_growth_pct"] == growth


@pytest.mark.django_db
def test_write__a_run_whose_memory_gave_no_growth_still_reports(tmp_path):
    """A first sample of 0 made the growth None, and formatting it crashed after the whole run."""
    out = io.StringIO()
    memory = {"server_rss_mib": 171.0, "server_pss_mib": 131.0, "server_pss_growth_pct": None}
    bench.Command(stdout=out, stderr=io.StringIO())._write([_result(**memory)], {**_OPTS, "output": str(tmp_path)})

    assert "batch 1: server memory peak 131 MiB PSS (171 MiB RSS), PSS growth after warm-up unknown" in out.getvalue()
    assert len(list(tmp_path.glob("bench-*.json"))) == 1


@pytest.mark.slow
def test_bench__a_server_that_dies_mid_run_stops_the_run(tmp_path):
    """It went unnoticed: a batch of errors, memory read as 0, "PSS growth -100.0%", and exit status 0."""
    with _bench_running(tmp_path) as (proc, processes, stderr):
        [arbiter] = [pid for pid, cmd in processes.items() if "gunicorn" in cmd and pid in _children(proc.pid)]
        os.kill(arbiter, signal.SIGKILL)
        returncode = proc.wait(timeout=60)

        assert returncode == 1 and "gunicorn exited with status -9 during batch 1" in "".join(stderr), stderr[-5:]
        assert _gone({pid: cmd for pid, cmd in processes.items() if "gunicorn" not in cmd}) == []  # the load's
        assert not list((tmp_path / "out").iterdir())  # no report of a broken run


def _children(pid: int) -> list[int]:
    return bench.process_children().get(pid, [])


def test_write__with_url_the_meta_names_the_server_external_and_none_of_benchs_own_settings(tmp_path):
    """The JSON and chart described bench's defaults (2 gthread workers x 4, this machine's database) as the server."""
    opts = {**_OPTS, "url": "http://10.0.0.5:8000/api/v1/", "output": str(tmp_path)}
    bench.Command(stdout=io.StringIO(), stderr=io.StringIO())._write([_result()], opts)

    [report] = tmp_path.glob("bench-external-*.json")
    meta = json.loads(report.read_text())["meta"]
    assert meta["server"] == "external" and meta["url"] == "http://10.0.0.5:8000/api/v1"
    assert not {"database", "workers", "threads", "connections", "worker_class", "postgresql"} & set(meta), meta
    assert meta["producers"] == 1 and meta["duration_s"] == 2.0  # what bench did choose
    [chart] = tmp_path.glob("bench-external-*.svg")
    assert "WonderQ end to end at http://10.0.0.5:8000/api/v1, load from" in chart.read_text()
    assert "workers" not in chart.read_text()


@pytest.mark.django_db
def test_write__without_url_the_meta_describes_the_server_bench_ran(tmp_path):
    bench.Command(stdout=io.StringIO(), stderr=io.StringIO())._write([_result()], {**_OPTS, "output": str(tmp_path)})

    [report] = tmp_path.glob(f"bench-{connection.vendor}-*.json")
    meta = json.loads(report.read_text())["meta"]
    assert {k: meta[k] for k in ("database", "workers", "threads", "connections", "worker_class")} == {
        "database": connection.vendor, "workers": 2, "threads": 4, "connections": 100, "worker_class": "gthread",
    }  # fmt: skip
    assert "server" not in meta and "url" not in meta
