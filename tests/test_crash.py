"""A server killed mid-traffic (SIGKILL: no cleanup, requests cut off) loses nothing it answered.

DESIGN: every move between states is one transaction and nothing is lost on restart. Here gunicorn,
workers and all, is killed while producers send and consumers receive and ack, then started again
on the same database:
- every message whose send was answered 201 is delivered after the restart, unless an ack of it
  was answered before the crash (at least once: a message leased but not acked comes back);
- no message whose ack was answered comes back;
- in a review queue the leases cut off by the crash run out into review, and the operator's bulk
  requeue brings them back.
A request cut off by the kill may or may not have been committed: its client cannot know, so such
a send may show up after the restart (it is not counted as lost or as extra).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from queues.bench.load import Client
from queues.management.gunicorn import gunicorn_command
from tests import live

pytestmark = pytest.mark.slow

QUEUE = "crash"
LEASE_BEFORE = 2  # seconds: leases cut off by the crash run out soon after the restart


def _serving(env: dict, url: str):
    """gunicorn as `serve` runs it for this database (its worker class), in its own process group."""
    port = live.free_port()
    worker_class = "gevent" if url.startswith("postgres") else "gthread"
    args = gunicorn_command(bind=f"127.0.0.1:{port}", workers=2, worker_class=worker_class, threads=4, connections=100)
    return live.process([*args, "--log-level", "critical"], env, f"http://127.0.0.1:{port}/api/v1/health/"), port


class _Traffic:
    """Producers and consumers until the server goes away; what the server answered, per body."""

    def __init__(self, base: str, key: str):
        self.base, self.key = base, key
        self.sent: set[str] = set()  # answered 201
        self.acked: set[str] = set()  # ack answered acked or acked_late
        self.ack_unanswered: set[str] = set()  # an ack cut off by the crash: it may have been committed
        self.unexpected: list = []  # answers other than 201 / 200 before the crash (a thread's assert would only warn)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._produce, args=(n,), daemon=True) for n in range(2)]
        self.threads += [threading.Thread(target=self._consume, args=(n,), daemon=True) for n in range(2)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a load thread outlived the server"

    def _produce(self, n: int) -> None:
        client = Client(self.base, self.key)
        for batch in range(1_000_000):
            bodies = [f"p{n}-{batch}-{i}" for i in range(10)]
            try:
                status, _, _ = client.post(f"/queues/{QUEUE}/messages/", {"messages": [{"body": b} for b in bodies]})
            except OSError:
                return  # the server is gone: this send's fate is unknown
            if status != 201:
                self.unexpected.append(("send", status))
                return
            with self.lock:
                self.sent.update(bodies)

    def _consume(self, n: int) -> None:
        client = Client(self.base, self.key)
        while True:
            try:
                status, data, _ = client.post(
                    f"/queues/{QUEUE}/receive/",
                    {"max_messages": 10, "consumer": f"c{n}", "visibility_timeout": LEASE_BEFORE},
                )
                if status != 200:
                    self.unexpected.append(("receive", status, data))
                    return
                bodies = {m["receipt"]: m["body"] for m in data["messages"]}
                if not bodies:
                    continue
            except OSError:
                return
            try:
                status, data, _ = client.post(f"/queues/{QUEUE}/ack/", {"receipts": list(bodies)})
            except OSError:
                with self.lock:
                    self.ack_unanswered.update(bodies.values())
                return
            if status != 200:
                self.unexpected.append(("ack", status, data))
                return
            done = [bodies[r["receipt"]] for r in data["results"] if r["status"] in ("acked", "acked_late")]
            with self.lock:
                self.acked.update(done)


def _hold(base: str, key: str, count: int) -> set[str]:
    """Receive up to `count` messages and keep them (no ack): their bodies."""
    status, data, _ = Client(base, key).post(
        f"/queues/{QUEUE}/receive/", {"max_messages": count, "consumer": "holder", "visibility_timeout": LEASE_BEFORE}
    )
    assert status == 200, (status, data)
    return {m["body"] for m in data["messages"]}


def _drain(base: str, key: str) -> list[str]:
    """Receive and ack until the queue stays empty past the crashed leases' expiry; the bodies, in order."""
    client = Client(base, key)
    bodies: list[str] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < LEASE_BEFORE + 1.5:
        status, data, _ = client.post(
            f"/queues/{QUEUE}/receive/", {"max_messages": 100, "consumer": "drain", "visibility_timeout": 300}
        )
        assert status == 200, (status, data)
        if not data["messages"]:
            time.sleep(0.1)
            continue
        status, acks, _ = client.post(f"/queues/{QUEUE}/ack/", {"receipts": [m["receipt"] for m in data["messages"]]})
        assert status == 200 and {r["status"] for r in acks["results"]} == {"acked"}, acks
        bodies += [m["body"] for m in data["messages"]]
        quiet_since = time.monotonic()
    client.sock.close()  # an idle keep-alive connection would hold up the server's graceful stop
    return bodies


@pytest.mark.parametrize("on_timeout", ["requeue", "review"])
def test_crash__a_server_killed_mid_traffic_loses_nothing_it_answered(tmp_path, on_timeout):
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url, WONDERQ_RATE_PER_TOKEN="10000000/m")
        env.pop("REDIS_URL", None)
        live.manage(env, "migrate", "-v0")
        key = live.manage(env, "create_token", "alice").strip()
        live.manage(env, "create_queue", QUEUE, "--owner", "alice", "--on-timeout", on_timeout)

        server, port = _serving(env, url)
        with server as running:
            base = f"http://127.0.0.1:{port}/api/v1"
            traffic = _Traffic(base, key)
            traffic.start()
            deadline = time.monotonic() + 60
            while (len(traffic.acked) < 300 or len(traffic.sent) < 600) and time.monotonic() < deadline:
                time.sleep(0.05)
            # A consumer that holds leases when the server dies: it never acks them.
            while not (held := _hold(base, key, 5)) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.killpg(running.pid, signal.SIGKILL)  # mid-traffic: requests in flight are cut off
            running.wait()
            traffic.join()
        assert traffic.unexpected == []
        sent, acked, unknown = set(traffic.sent), set(traffic.acked), set(traffic.ack_unanswered)
        assert len(acked) >= 300 and len(sent) >= 600, (len(acked), len(sent))
        assert held and held <= sent - acked
        assert len(unknown) <= 20, len(unknown)  # at most one batch of each of the two consumers

        server, port = _serving(env, url)
        with server:
            base = f"http://127.0.0.1:{port}/api/v1"
            if on_timeout == "review":
                time.sleep(LEASE_BEFORE + 0.5)  # the leases the crash cut off run out, into review
                swept = live.manage(env, "sweep").split()
                requeued = live.manage(env, "requeue_review", "--queue", QUEUE).split()
                # The held ones at least (the consumers' cut-off receives may add more, or have run out already).
                assert int(swept[swept.index("review,") - 2]) >= len(held), swept
                assert int(requeued[1]) >= len(held), requeued
            delivered = _drain(base, key)
        stats = live.manage(env, "queue_stats", QUEUE).splitlines()[1].split()

    assert len(delivered) == len(set(delivered)), "a message came back twice after the restart"
    after = set(delivered)
    assert held <= after, f"held at the crash, never back: {sorted(held - after)}"
    assert sent - acked - unknown <= after, f"lost: {sorted(sent - acked - unknown - after)[:10]}"
    assert not acked & after, f"acked before the crash, delivered again: {sorted(acked & after)[:10]}"
    # Nothing else is left: ready, delayed, leased and review all 0.
    assert stats[1:5] == ["0", "0", "0", "0"], stats
