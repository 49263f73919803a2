"""WonderQ's gevent workers share keep-alive connections out evenly, and a stopped worker holds nobody back."""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from queues.management.commands.bench import process_children
from queues.management.gunicorn import WORKER_CLASSES, gunicorn_command
from tests import live
from wonderq_project.workers import _ENTRY, STALE_AFTER, ConnectionTable, may_accept


@pytest.mark.parametrize(
    ("own", "others", "expected"),
    [
        (0, [], True),  # alone: always
        (5, [], True),
        (3, [3], True),  # a tie: both listen
        (4, [3], False),
        (2, [5, 1], False),  # the fewest anywhere decides
        (1, [5, 1], True),
    ],
)
def test_may_accept__only_while_holding_the_fewest(own, others, expected):
    assert may_accept(own, others) is expected


def test_table__others_are_the_live_workers_but_this_one():
    table = ConnectionTable(slots=3)
    first, second, third = (table.claim(pid) for pid in (101, 102, 103))
    assert len({first, second, third}) == 3
    table.write(first, 101, 4)
    table.write(second, 102, 2)
    table.write(third, 103, 7)
    assert sorted(table.others(first)) == [2, 7]
    assert sorted(table.others(None)) == [2, 4, 7]  # a worker outside the table sees them all

    table.release(third, 103)  # a worker that stopped listening
    assert table.others(first) == [2]
    # A worker that stopped writing (stopped, stuck, killed) no longer counts, and its slot is free again.
    _ENTRY.pack_into(table._memory, second * _ENTRY.size, 102, 0, time.monotonic() - STALE_AFTER - 1)
    assert table.others(first) == []
    assert {table.claim(104), table.claim(105)} == {second, third}
    assert table.claim(106) is None  # full: that worker accepts without the table
    # The stuck worker wakes and leaves: the slot is 104's or 105's now, and stays theirs.
    table.release(second, 102)
    assert len(table.others(first)) == 2


def test_table__only_a_silence_the_reader_was_running_for_counts():
    table = ConnectionTable(slots=2)
    own, other = table.claim(101), table.claim(102)
    now = time.monotonic()
    last_write = now - STALE_AFTER - 1
    _ENTRY.pack_into(table._memory, other * _ENTRY.size, 102, 3, last_write)
    assert table.others(own) == []  # silent for longer than STALE_AFTER: left out
    # The reader was paused from just after that write until now (the whole VM was): silent 0.1 s of its watch.
    assert table.others(own, paused=(last_write + 0.1, now)) == [3]
    # A pause that ended long ago, or came before the write, leaves the silence as long as it was.
    assert table.others(own, paused=(last_write + 0.1, last_write + 0.5)) == []
    assert table.others(own, paused=(last_write - 5, last_write - 1)) == []


def _write_from_child(table: ConnectionTable) -> None:
    table.write(table.claim(os.getpid()), os.getpid(), 9)


def test_table__a_forked_worker_writes_where_its_siblings_read():
    table = ConnectionTable(slots=4)
    own = table.claim(os.getpid())
    child = multiprocessing.get_context("fork").Process(target=_write_from_child, args=(table,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert table.others(own) == [9]


def _owners(port: int, clients: list[socket.socket] | list[int], workers: list[int]) -> list[int | None]:
    """The worker holding the server end of each client connection, from /proc's socket tables."""
    inode_by_client_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                if local == port:
                    inode_by_client_port[remote] = fields[9]
    worker_by_inode = {}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    worker_by_inode[target[8:-1]] = pid
    ports = [client if isinstance(client, int) else client.getsockname()[1] for client in clients]
    return [worker_by_inode.get(inode_by_client_port.get(client_port)) for client_port in ports]


def _request(client: socket.socket) -> None:
    client.sendall(b"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = http.client.HTTPResponse(client)
    response.begin()
    assert response.status == 200
    response.read()


@contextlib.contextmanager
def _server(tmp_path, worker_class: str):
    """gunicorn as `serve` and `bench` start it, 2 workers; yields its port, worker pids and arbiter pid.

    Idle connections stay open for 30 s instead of gunicorn's 2, so that no count falls while a test waits.
    """
    port = live.free_port()
    args = gunicorn_command(bind=f"127.0.0.1:{port}", workers=2, worker_class=worker_class, threads=4, connections=100)
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url)
        env.pop("REDIS_URL", None)
        with live.process(
            [*args, "--log-level", "warning", "--keep-alive", "30"], env, f"http://127.0.0.1:{port}/api/v1/health/"
        ) as arbiter:
            deadline = time.monotonic() + 20
            while len(workers := process_children().get(arbiter.pid, [])) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(workers) == 2, workers
            # A worker joins only once its app is loaded: wait until two connections in a row land apart.
            while time.monotonic() < deadline:
                pair = _connect(port, 2)
                owners = _owners(port, pair, workers)
                for client in pair:
                    client.close()
                if len(set(owners)) == 2:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"both workers never took a connection: {owners}")
            time.sleep(0.5)  # both have counted those two connections closed
            yield port, workers, arbiter.pid


def _open(port: int, count: int) -> list[socket.socket]:
    """`count` connections, established by the kernel: they wait in the listen backlog until a worker accepts."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def _connect(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections opened at once, as a pool of clients starting together does."""
    clients = _open(port, count)
    for client in clients:
        _request(client)
    return clients


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads which worker holds a connection from Linux's /proc"
)


def test_workers__serve_and_bench_run_ours_for_gevent_and_gunicorns_own_gthread():
    def worker_class(name: str) -> str:
        command = gunicorn_command(bind="127.0.0.1:1", workers=2, worker_class=name, threads=4, connections=100)
        return command[command.index("--worker-class") + 1]

    assert worker_class("gevent") == WORKER_CLASSES["gevent"] == "wonderq_project.workers.GeventWorker"
    assert worker_class("gthread") == "gthread"
    assert worker_class("sync") == "sync"


@linux_only
@pytest.mark.slow
def test_workers__keep_alive_connections_are_shared_out_evenly(tmp_path):
    """Eight connections opened together, three times over: each time 4 and 4 (gunicorn's own: mostly 8 and 0)."""
    with _server(tmp_path, "gevent") as (port, workers, _arbiter):
        for _ in range(3):
            clients = _connect(port, 8)
            ports = [client.getsockname()[1] for client in clients]
            owners = Counter(_owners(port, ports, workers))
            for client in clients:
                client.close()
            assert sorted(owners.values()) == [4, 4], owners
            deadline = time.monotonic() + 10  # both workers have closed this round's connections before the next
            while any(_owners(port, ports, workers)) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # and have written their new counts


@linux_only
@pytest.mark.slow
def test_workers__after_the_whole_machine_paused_connections_are_still_shared_out_evenly(tmp_path):
    """A VM paused for longer than STALE_AFTER stops every worker at once, and on waking every entry is
    as old as the others. None of the workers is stuck: the first to wake must not take the waiting
    connections as if it were alone (CI saw 7 and 1). SIGSTOP stops the workers as the pause does,
    while the monotonic clock they compare runs on."""
    with _server(tmp_path, "gevent") as (port, workers, _arbiter):
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STALE_AFTER + 0.5)
            clients = _open(port, 8)
        finally:
            for pid in workers:  # one wakes a little before the other, as on a busy VM
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.05)
        for client in clients:
            _request(client)
        owners = Counter(_owners(port, clients, workers))
        for client in clients:
            client.close()
        assert sorted(owners.values()) == [4, 4], owners


@linux_only
@pytest.mark.slow
def test_workers__a_stopped_worker_with_the_fewest_connections_holds_no_one_back(tmp_path):
    with _server(tmp_path, "gevent") as (port, workers, _arbiter):
        clients = _connect(port, 8)
        owners = _owners(port, clients, workers)
        # Close one connection of one worker: it now holds the fewest, so only it listens. Then stop it.
        stopped = owners[0]
        clients.pop(0).close()
        time.sleep(0.5)
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            late = _connect(port, 1)
            waited = time.monotonic() - started
            assert _owners(port, late, workers) == [pid for pid in workers if pid != stopped]
            # The other worker took it once the stopped one's entry went stale, not never.
            assert waited < STALE_AFTER + 2, waited
        finally:
            os.kill(stopped, signal.SIGCONT)
        for client in [*clients, *late]:
            _request(client)  # both workers serve on
            client.close()


@linux_only
@pytest.mark.slow
def test_workers__a_worker_restarting_holds_no_one_back(tmp_path):
    """A stopping worker leaves the table when it stops listening, and its replacement joins only once it listens.

    Otherwise the worker left serving would see a sibling with fewer connections (the stopping one
    finishing its last requests, or the new one still loading the app) and refuse new connections
    until that entry went stale or the new worker came up.
    """
    with _server(tmp_path, "gevent") as (port, workers, arbiter):
        clients = _connect(port, 4)
        owners = _owners(port, clients, workers)
        stopping = owners[0]
        draining = [client for client, owner in zip(clients, owners, strict=True) if owner == stopping]
        os.kill(stopping, signal.SIGTERM)
        time.sleep(1.5)  # it notices within a second, stops listening and waits for its open connections

        def answered_at_once() -> list[socket.socket]:
            started = time.monotonic()
            late = _connect(port, 1)
            assert time.monotonic() - started < 0.3  # the serving worker took it at once
            return late

        draining[0].close()  # while it drains, its falling count must not hold the other back
        time.sleep(0.2)
        late = answered_at_once()
        for client in draining[1:]:
            client.close()  # its last connection ends: it exits, and gunicorn forks a new one
        deadline = time.monotonic() + 10
        while Path(f"/proc/{stopping}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        late += answered_at_once()  # nor the new one, while it loads the app
        clients = [client for client in clients if client not in draining]
        # Once the new worker is up it takes its share: it holds fewer connections than the other.
        serving = [pid for pid in workers if pid != stopping]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            fresh = _connect(port, 1)
            owner = _owners(port, fresh, process_children().get(arbiter, []))[0]
            fresh[0].close()
            if owner not in (None, *serving):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the new worker never took a connection")
        for client in [*clients, *late]:
            client.close()


def test_workers__two_servers_on_one_host_leave_no_shared_control_socket(tmp_path):
    """gunicorn 25+ opens a control socket at one path per user by default; two servers took it from
    each other. serve and bench start theirs without one."""
    home = tmp_path / "home"
    home.mkdir()
    with live.fresh_database(tmp_path) as database_url:
        env = live.project_env(database_url, HOME=str(home))
        env.pop("REDIS_URL", None)
        env.pop("XDG_RUNTIME_DIR", None)
        ports = [live.free_port(), live.free_port()]
        args = [
            gunicorn_command(bind=f"127.0.0.1:{port}", workers=1, worker_class="gthread", threads=2, connections=1)
            for port in ports
        ]
        with (
            live.process([*args[0], "--log-level", "warning"], env, f"http://127.0.0.1:{ports[0]}/api/v1/health/"),
            live.process([*args[1], "--log-level", "warning"], env, f"http://127.0.0.1:{ports[1]}/api/v1/health/"),
        ):
            assert not list(home.rglob("*.ctl"))
