"""End-to-end load benchmark: a real gunicorn, the configured database, HTTP with keep-alive."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Tags
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from queues.bench import load
from queues.bench.data import expired_leases_create
from queues.bench.report import svg_chart, table
from queues.management.gunicorn import gunicorn_command, per_worker
from queues.services import leases_sweep, queue_create, token_create

MAX_DURATION_S = 86_400  # a day per batch size; more is a typo, and inf never ends
MAX_SWEEP = MAX_BACKLOG = 10_000_000  # ten times the largest the README measures


def _api_base(url: str) -> str:
    """The --url as the load's client dials it (http, a host, a port), or a CommandError naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise CommandError(f"--url {url}: {exc}") from None
    if parts.scheme != "http":
        # The load's client is a plain socket: an https:// server would be spoken to in plain HTTP.
        raise CommandError(f"--url {url}: bench speaks plain HTTP only, give http://HOST[:PORT]/api/v1")
    if not parts.hostname or port == 0:
        raise CommandError(f"--url {url}: give a host and a port from 1 to 65535, http://HOST[:PORT]/api/v1")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise CommandError(f"--url {url}: give the base URL only, http://HOST[:PORT]/api/v1, and the key with --token")
    return url.rstrip("/")


# The load's client dials the server itself: so does the health check, past any http_proxy setting.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health_check(base: str) -> None:
    """GET {base}/health/ once: a CommandError unless it answers as WonderQ does, 200 {"status": "ok"}."""
    url = f"{base}/health/"
    try:
        with _direct.open(url, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CommandError(
            f"--url: {url} answered {exc.code} {exc.reason}; is the URL the API's base, /api/v1?"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise CommandError(f"--url: no WonderQ health answer from {url}: {exc!r}") from None
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        raise CommandError(f"--url: {url} answered {answer!r}, not WonderQ's {{'status': 'ok'}}")


def _remote_queue_create(base: str, token: str, name: str) -> None:
    """Create the run's queue through the API: the first request that shows whether --token is right."""
    try:
        status, data, _ = load.Client(base, token).post("/queues/", {"name": name})
    except (OSError, ValueError, LookupError) as exc:
        raise CommandError(f"creating queue {name} at {base} failed: {exc!r}") from None
    # 409: a queue of that name exists already (a run of the same second); the load can use it.
    if status not in (201, 409):
        raise CommandError(f"creating queue {name} at {base} answered {status}: {data}; is --token right?")


def _output_folder(path: str) -> Path:
    """The --output folder, made if need be, or a CommandError saying why it cannot hold the results."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--output {path}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"--output {path}: the folder is not writable")
    return folder


def _stopped(signum, frame):
    raise CommandError("stopped by SIGTERM", returncode=128 + signal.SIGTERM)


def _server_stop(server: subprocess.Popen) -> None:
    """SIGTERM to gunicorn; if it has not stopped within 30 s, SIGKILL to it and its workers."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        workers = process_children().get(server.pid, [])
        server.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.wait()


def _server_alive(server: subprocess.Popen, batch: int) -> None:
    """A CommandError if gunicorn has exited: the run's figures would be errors, its memory read as 0."""
    if server.poll() is not None:
        raise CommandError(f"gunicorn exited with status {server.returncode} during batch {batch} (see above)")


def _pool_kill(pool: ProcessPoolExecutor) -> None:
    """End a pool's processes at once (Python 3.14 has pool.kill_workers())."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_children() -> dict[int, list[int]]:
    """Every process's children, by parent pid, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")".
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree_memory_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS of a process and all its descendants, from /proc (Linux).

    RSS counts a page shared by the forked workers once per worker; PSS splits it
    between them, so the PSS sum is the memory the server really holds.
    """
    children = process_children()
    rss = pss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a local process, from /proc (Linux); None if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _is_local_host(host: str) -> bool:
    """Whether a database HOST setting names this machine: a loopback address or a Unix socket (empty or a path)."""
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


_PG_SETTINGS = (
    "server_version",
    "autovacuum",
    "track_counts",
    "shared_buffers",
    "synchronous_commit",
    "fsync",
    "max_wal_size",
)


def _postgresql_settings() -> dict[str, str]:
    """The server settings that move these figures most, as PostgreSQL shows them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name", [list(_PG_SETTINGS)])
        return dict(cursor.fetchall())


def sweep_cpu_clock() -> tuple[str, Callable[[], float | None]] | None:
    """Where the sweep on this thread's connection spends its CPU, and a clock of that CPU time.

    On SQLite the sweep runs in this thread; on PostgreSQL in the server process behind this
    connection, which only /proc of the same machine shows. None for a server elsewhere.
    """
    if connection.vendor == "sqlite":
        return "the sweeping thread", time.thread_time
    if connection.vendor != "postgresql" or not _is_local_host(connection.settings_dict.get("HOST") or ""):
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return None
    except OSError:
        return None
    return "its PostgreSQL backend", lambda: _cpu_seconds(pid)


def cpu_calibration_ms() -> float:
    """Milliseconds for a fixed piece of pure-Python work (2,000,000 loop additions), best of 3.

    Shared VMs of one class differ in speed, and one VM from minute to minute: each run
    records this beside its figures, so runs on a slower moment can be told apart.
    """
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def ipc_calibration_us(rounds: int = 2000) -> float:
    """Microseconds for one round trip of a byte between two processes over a socket pair, best of 3.

    The pure-Python calibration does not see a VM whose system calls and context switches have
    slowed: on 2026-12-03 it read as in the morning while the same code ran a quarter slower.
    Every request the bench makes is such a round trip, through the kernel, several times over.
    Both processes run on one CPU: across two, an idle CPU's wake-up dominates (about 60 µs on
    this VM idle, 5 µs busy), which says how busy the machine is, not how fast.
    """
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echo: nothing but the socket, then out without running any cleanup
        parent.close()
        try:
            while data := child.recv(1):
                child.sendall(data)
        finally:
            os._exit(0)
    child.close()
    best = float("inf")
    try:
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(rounds):
                parent.sendall(b"x")
                parent.recv(1)
            best = min(best, time.perf_counter() - started)
    finally:
        parent.close()
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, allowed)
    return round(best / rounds * 1e6, 1)


_CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> list[int] | None:
    """The machine's CPU time so far in each of _CPU_STATES, all CPUs together (/proc/stat); None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    states = fields[1 : 1 + len(_CPU_STATES)]
    return [int(value) for value in states] if len(states) == len(_CPU_STATES) else None


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """The percent of the machine's CPU time between two cpu_times() spent in each state.

    "steal" is time the hypervisor gave this VM's CPUs to others; "system" and "softirq" the
    kernel's, where loopback TCP and the database's I/O are done. A slow moment with little
    steal is not the hypervisor taking the CPUs away: each ran slower while it ran (on
    2026-12-03 afternoon, half the speed of the morning at 0-5% steal).
    """
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return (
        {state: round(100 * s / total, 1) for state, s in zip(_CPU_STATES, spent, strict=True)} if total > 0 else None
    )


def _machine() -> dict[str, str | None]:
    """The processor, kernel and Python the figures were measured on."""
    model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _median_of(runs: list[dict]) -> dict:
    """One result whose every figure is the median of the runs' (each run kept under "runs")."""

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    result = dict(runs[0])
    for key in (
        "sent",
        "acked",
        "sent_per_s",
        "acked_per_s",
        "server_rss_mib",
        "server_pss_mib",
        "cpu_calibration_ms",
        "ipc_calibration_us",
    ):
        result[key] = median(r[key] for r in runs)
    result["server_pss_growth_pct"] = median(r["server_pss_growth_pct"] for r in runs)
    shares = [r["machine_cpu_pct"] for r in runs if r["machine_cpu_pct"] is not None]
    result["machine_cpu_pct"] = (
        {state: round(median(s[state] for s in shares), 2) for state in _CPU_STATES} if shares else None
    )
    result["latency_ms"] = {
        op: {
            **{q: median(r["latency_ms"][op][q] for r in runs) for q in ("p50", "p99", "p999")},
            "max": max(
                [r["latency_ms"][op]["max"] for r in runs if r["latency_ms"][op]["max"] is not None], default=None
            ),
            "requests": sum(r["latency_ms"][op]["requests"] for r in runs),
        }
        for op in runs[0]["latency_ms"]
    }
    result["errors"] = sum(r["errors"] for r in runs)
    result["error_samples"] = [sample for r in runs for sample in r["error_samples"]][:5]
    result.pop("memory_samples", None)
    result["runs"] = [{k: v for k, v in r.items() if k != "memory_samples"} for r in runs]
    return result


def _memory_summary(samples: list[tuple[float, int, int]]) -> dict:
    """Peak RSS and PSS, and PSS growth from the end of the first tenth of the run (warm-up) to the end."""
    # A process tree that cannot be read (gone, or not yet there) reads 0: no memory, and no growth of -100%.
    samples = [s for s in samples if s[2] > 0]
    if not samples:
        return {"server_rss_mib": None, "server_pss_mib": None, "server_pss_growth_pct": None}
    warm = next((s for s in samples if s[0] >= samples[-1][0] / 10), samples[0])
    return {
        "server_rss_mib": max(s[1] for s in samples) / 1024,
        "server_pss_mib": max(s[2] for s in samples) / 1024,
        "server_pss_growth_pct": (samples[-1][2] - warm[2]) / warm[2] * 100 if warm[2] else None,
        "memory_samples": [{"t": round(t, 1), "rss_kib": rss, "pss_kib": pss} for t, rss, pss in samples],
    }


class Command(BaseCommand):
    help = (
        "Benchmark WonderQ end to end: start gunicorn on 127.0.0.1 over the configured database (or use --url), "
        "run producer and consumer processes doing send B -> receive B -> ack B over HTTP, and report msgs/s, "
        "per-request p50/p99, server memory and errors as a table, JSON and an SVG chart."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="Benchmark a running server (its /api/v1 base URL); needs --token.")
        parser.add_argument("--token", help="API token for --url.")
        # The server's options default to None so that a value given with --url can be told apart and refused.
        parser.add_argument("--workers", type=int, help="gunicorn workers (default 2).")
        parser.add_argument(
            "--threads", type=int, help="threads per gthread worker (default 4; a sync worker has one, so 1 or none)."
        )
        parser.add_argument("--connections", type=int, help="requests a gevent worker serves at once (default 100).")
        parser.add_argument(
            "--worker-class",
            choices=("gthread", "gevent", "sync"),
            help="gunicorn worker class (default WONDERQ_WORKER_CLASS: gevent on PostgreSQL, gthread on SQLite; "
            "sync, one request at a time per worker, to compare; gevent needs PostgreSQL).",
        )
        parser.add_argument("--producers", type=int, default=2, help="producer processes (default 2).")
        # Five consumers to two producers: a message costs a consumer two requests (receive, ack),
        # and on two shared cores this ratio gave the highest acked rate at every batch size.
        parser.add_argument("--consumers", type=int, default=5, help="consumer processes (default 5).")
        parser.add_argument(
            "--duration",
            type=float,
            default=20,
            help=f"seconds per batch size (default 20, at most {MAX_DURATION_S:,}).",
        )
        parser.add_argument(
            "--batch", default="1,10,100", help="comma-separated batch sizes, each once, 1-100 (default 1,10,100)."
        )
        parser.add_argument(
            "--runs", type=int, default=1, help="runs per batch size; the report gives medians (default 1)."
        )
        parser.add_argument(
            "--sweep",
            type=int,
            default=0,
            metavar="N",
            help=f"also time a sweep of N expired leases (at most {MAX_SWEEP:,}; not with --url).",
        )
        parser.add_argument(
            "--backlog",
            type=int,
            default=0,
            metavar="N",
            help=f"N ready messages in the queue before each run starts (at most {MAX_BACKLOG:,}).",
        )
        parser.add_argument(
            "--output", default="bench-results", help="folder for JSON and SVG (default bench-results)."
        )

    def handle(self, *args, **opts):
        server_options = ("workers", "threads", "connections", "worker_class")
        if opts["url"]:
            given = [f"--{name.replace('_', '-')}" for name in server_options if opts[name] is not None]
            if given:
                # They were ignored: the report described bench's own server, not the one measured.
                raise CommandError(
                    f"{', '.join(given)} set up the server bench starts; with --url the server is already running, "
                    "so leave them out"
                )
        elif opts["token"]:
            raise CommandError("--token is for --url: without it bench makes its own token")
        defaults = {"workers": 2, "connections": 100, "worker_class": settings.WONDERQ_WORKER_CLASS}
        for name, value in defaults.items():
            if opts[name] is None:
                opts[name] = value
        try:
            batches = [int(b) for b in opts["batch"].split(",")]
        except ValueError:
            raise CommandError("--batch takes comma-separated whole numbers, e.g. 1,10,100") from None
        if not batches or any(not 1 <= b <= 100 for b in batches):
            raise CommandError("each batch size must be between 1 and 100")
        if len(set(batches)) < len(batches):
            raise CommandError(f"--batch {opts['batch']} names a batch size twice: give each once")
        if opts["worker_class"] == "sync":
            # gunicorn runs a sync worker given more than one thread as gthread: the report would name the wrong class.
            if opts["threads"] not in (None, 1):
                raise CommandError("--worker-class sync serves one request at a time per worker: --threads must be 1")
            opts["threads"] = 1
        elif opts["threads"] is None:
            opts["threads"] = 4
        if opts["worker_class"] == "gevent" and not opts["url"] and connection.vendor == "sqlite":
            raise CommandError(
                "--worker-class gevent needs PostgreSQL: on SQLite a writer waiting for the lock would stop every "
                "request of its worker. Use gthread."
            )
        counts = ("producers", "consumers", "workers", "runs", "threads", "connections")
        if min(opts[name] for name in counts) < 1:
            raise CommandError(
                "--producers, --consumers, --workers, --threads, --connections and --runs must be positive"
            )
        # NaN passes any comparison, and inf would never end.
        if not (math.isfinite(opts["duration"]) and 0 < opts["duration"] <= MAX_DURATION_S):
            raise CommandError(f"--duration must be more than 0 and at most {MAX_DURATION_S:,} seconds")
        for name, cap in (("sweep", MAX_SWEEP), ("backlog", MAX_BACKLOG)):
            if not 0 <= opts[name] <= cap:
                raise CommandError(f"--{name} must be between 0 and {cap:,}")
        if opts["sweep"] and opts["url"]:
            raise CommandError("--sweep times a sweep of this machine's database: it cannot be used with --url")
        if opts["url"] and not opts["token"]:
            raise CommandError("--url needs --token")

        if opts["url"]:
            # Before anything else is done: a wrong URL was a traceback, or a run of only errors.
            _health_check(_api_base(opts["url"]))
        # Made now: a bad --output (a file, a path that cannot be written) was found after the whole run.
        _output_folder(opts["output"])

        if opts["url"]:
            base, token = _api_base(opts["url"]), opts["token"]
        else:
            call_command("migrate", interactive=False, verbosity=0)
            # Said before the figures it would explain (queues.checks: autovacuum off on PostgreSQL).
            self.check(databases=[connection.alias], tags=[Tags.database])
        server = None
        # SIGTERM's default ends bench at once and leaves gunicorn running: raise instead, so the finally stops it.
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            if not opts["url"]:
                server, base = self._start_server(opts)
                self._await_server(server, base, opts)
                from django.contrib.auth import get_user_model

                user, _ = get_user_model().objects.get_or_create(username="bench")
                _, token = token_create(user=user, name="bench")
            results = []
            for batch in batches:
                runs = [self._phase(base, token, batch, opts, server, run) for run in range(opts["runs"])]
                results.append(runs[0] if len(runs) == 1 else _median_of(runs))
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
            try:
                if server is not None:
                    _server_stop(server)
            finally:
                signal.signal(signal.SIGTERM, previous)
        self._write(results, opts)

    def _start_server(self, opts: dict):
        port = _free_port()
        workers, worker_class = opts["workers"], opts["worker_class"]
        cmd = [
            *gunicorn_command(
                bind=f"127.0.0.1:{port}",
                workers=workers,
                worker_class=worker_class,
                threads=opts["threads"],
                connections=opts["connections"],
            ),
            "--log-level",
            "warning",
        ]
        # The limiter still counts every request; its budget is just larger than the load.
        # The server runs as in production: DEBUG off (no query log), whatever the caller has.
        env = {
            "WONDERQ_RATE_PER_TOKEN": "10000000/m",
            **os.environ,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or settings.SECRET_KEY,
        }
        server = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env)  # noqa: S603 (fixed arguments)
        return server, f"http://127.0.0.1:{port}/api/v1"

    def _await_server(self, server: subprocess.Popen, base: str, opts: dict) -> None:
        """Wait until gunicorn answers /health/, at most 30 s; a CommandError if it exits first."""
        for _ in range(150):
            if server.poll() is not None:  # not polled on over HTTP for the rest of the 30 s
                raise CommandError(f"gunicorn exited with status {server.returncode} before it answered (see above)")
            try:
                with urllib.request.urlopen(f"{base}/health/", timeout=2):  # noqa: S310 (our own server)
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise CommandError("gunicorn did not start within 30 s")
        each = per_worker(worker_class=opts["worker_class"], threads=opts["threads"], connections=opts["connections"])
        self.stderr.write(f"gunicorn: {opts['workers']} {opts['worker_class']} workers x {each} on {base}")

    def _phase(self, base: str, token: str, batch: int, opts: dict, server, run: int = 0) -> dict:
        name = f"bench-{int(time.time())}-b{batch}-r{run}"
        if opts["url"]:
            _remote_queue_create(base, token, name)
        else:
            from django.contrib.auth import get_user_model

            queue_create(name=name, owner=get_user_model().objects.get(username="bench"), visibility_timeout=60)
        seconds = opts["duration"]
        sweep: dict = {}
        sweeper = None
        if opts["sweep"] and not opts["url"] and batch == int(opts["batch"].split(",")[0]) and run == 0:
            sweeper = self._sweeper(opts["sweep"], sweep)
        self.stderr.write(f"batch {batch}: {opts['producers']} producers, {opts['consumers']} consumers, {seconds}s")
        if opts["backlog"]:
            self._backlog(name, opts["backlog"], base, token)
        memory: list[tuple[float, int, int]] = []
        calibration, ipc = cpu_calibration_ms(), ipc_calibration_us()
        machine_before = cpu_times()
        with ProcessPoolExecutor(max_workers=opts["producers"] + opts["consumers"]) as pool:
            try:
                futures = [
                    pool.submit(load.produce, base, token, name, batch, seconds) for _ in range(opts["producers"])
                ]
                futures += [
                    pool.submit(load.consume, base, token, name, batch, seconds) for _ in range(opts["consumers"])
                ]
                started = time.monotonic()
                if sweeper:
                    time.sleep(min(2.0, seconds / 4))
                    sweeper.start()
                while not all(f.done() for f in futures):
                    time.sleep(1)
                    if server is not None:
                        _server_alive(server, batch)
                        memory.append((time.monotonic() - started, *_tree_memory_kib(server.pid)))
                    self.stderr.write(f"  {time.monotonic() - started:4.0f}s", ending="\r")
                tallies = [f.result() for f in futures]
                if server is not None:
                    _server_alive(server, batch)
            except BaseException:
                # Stopped (SIGTERM, Ctrl-C, the server gone): the load would run on to its deadline, the pool waiting.
                _pool_kill(pool)
                raise
        machine_cpu = cpu_shares(machine_before, cpu_times())
        if sweeper:
            sweeper.join()
        elapsed = max(seconds, 1e-9)
        latencies = {op: [v for t in tallies for v in t.latencies[op]] for op in ("send", "receive", "ack")}
        result = {
            "batch": batch,
            "duration_s": seconds,
            "sent": sum(t.sent for t in tallies),
            "acked": sum(t.acked for t in tallies),
            "sent_per_s": sum(t.sent for t in tallies) / elapsed,
            "acked_per_s": sum(t.acked for t in tallies) / elapsed,
            "latency_ms": {
                op: {
                    **{
                        name: None if not values else load.percentile(values, q) * 1000
                        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
                    },
                    "max": max(values) * 1000 if values else None,
                    "requests": len(values),
                }
                for op, values in latencies.items()
            },
            "errors": sum(t.errors for t in tallies),
            "cpu_calibration_ms": calibration,
            "ipc_calibration_us": ipc,
            "machine_cpu_pct": machine_cpu,
            "error_samples": [s for t in tallies for s in t.error_samples][:5],
            **_memory_summary(memory),
        }
        if sweep:
            result["sweep"] = sweep
        self.stderr.write(
            f"  sent {result['sent_per_s']:,.0f}/s, acked {result['acked_per_s']:,.0f}/s, errors {result['errors']}"
            f" (CPU calibration {calibration} ms, round trip {ipc} µs"
            + (f", steal {machine_cpu['steal']:.0f}%" if machine_cpu else "")
            + ")"
        )
        return result

    def _backlog(self, name: str, count: int, base: str, token: str) -> None:
        """`count` READY messages waiting before the clock starts, sent over HTTP in batches of up to 100."""
        self.stderr.write(f"sending a backlog of {count:,} messages...")
        client = load.Client(base, token)
        for start in range(0, count, 100):
            body = {"messages": [{"body": "x" * 64} for _ in range(min(100, count - start))]}
            status, data, _ = client.post(f"/queues/{name}/messages/", body)
            if status != 201:
                raise CommandError(f"backlog send failed: {status} {data}")

    def _sweeper(self, count: int, out: dict) -> threading.Thread:
        from django.contrib.auth import get_user_model

        queue = queue_create(
            name=f"bench-sweep-{int(time.time())}", owner=get_user_model().objects.get(username="bench")
        )
        self.stderr.write(f"creating {count:,} expired leases for the sweep...")
        expired_leases_create(queue=queue, count=count, expired_at=timezone.now())

        def run():
            clock = sweep_cpu_clock()
            cpu_before = clock[1]() if clock else None
            started = time.perf_counter()
            result = leases_sweep()
            out.update(leases=result.total, batches=result.batches, seconds=time.perf_counter() - started)
            cpu_after = clock[1]() if clock else None
            if cpu_before is not None and cpu_after is not None:
                out.update(cpu_seconds=cpu_after - cpu_before, cpu_of=clock[0])
            connection.close()

        return threading.Thread(target=run)

    def _write(self, results: list[dict], opts: dict) -> None:
        self._print(results)  # first: were the files to fail now, the figures are still on the screen
        folder = Path(opts["output"])
        if opts["url"]:
            # Someone else's server: its database, workers and worker class are not bench's to tell.
            engine = "external"
            server = {"server": engine, "url": _api_base(opts["url"])}
            title = f"WonderQ end to end at {server['url']}, load from {os.cpu_count()} CPUs"
        else:
            engine = connection.vendor
            server = {
                "database": engine,
                **{name: opts[name] for name in ("workers", "threads", "connections")},
                "worker_class": opts["worker_class"],
            }
            title = f"WonderQ end to end on {engine}, {opts['workers']} workers, {os.cpu_count()} CPUs"
        meta = {
            **server,
            "producers": opts["producers"],
            "consumers": opts["consumers"],
            "runs": opts["runs"],
            "duration_s": opts["duration"],
            "backlog": opts["backlog"],
            "cpus": os.cpu_count(),
            "machine": _machine(),
            "when": timezone.now().isoformat(),
        }
        if engine == "postgresql":
            meta["postgresql"] = _postgresql_settings()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            (folder / f"bench-{engine}-{stamp}.json").write_text(
                json.dumps({"meta": meta, "results": results}, indent=2)
            )
            (folder / f"bench-{engine}-{stamp}.svg").write_text(svg_chart(results, title))
        except OSError as exc:
            raise CommandError(
                f"--output {folder}: the results could not be written ({exc}); the table is above"
            ) from None
        self.stdout.write(f"wrote {folder}/bench-{engine}-{stamp}.json and .svg")

    def _print(self, results: list[dict]) -> None:
        self.stdout.write(table(results))
        for r in results:
            if r.get("sweep"):
                s = r["sweep"]
                cpu = f" ({s['cpu_seconds']:.2f} s of CPU in {s['cpu_of']})" if "cpu_seconds" in s else ""
                self.stdout.write(f"sweep: {s['leases']:,} leases in {s['batches']} batches, {s['seconds']:.2f} s{cpu}")
            if r["server_rss_mib"] is not None:
                growth = r["server_pss_growth_pct"]
                self.stdout.write(
                    f"batch {r['batch']}: server memory peak {r['server_pss_mib']:.0f} MiB PSS"
                    f" ({r['server_rss_mib']:.0f} MiB RSS), PSS growth after warm-up "
                    + ("unknown" if growth is None else f"{growth:+.1f}%")
                )
            for sample in r["error_samples"]:
                self.stdout.write(f"error sample: {sample}")
