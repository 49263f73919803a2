"""The load generator: producer and consumer processes speaking HTTP/1.1 with keep-alive.

Each process runs one loop for a fixed time and returns its counts and latencies,
so the figures are what a real client sees: server, database and HTTP included.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    sent: int = 0
    acked: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"send": [], "receive": [], "ack": []})


class Client:
    """One keep-alive connection to the server; reconnects once if the server closed it."""

    def __init__(self, base_url: str, token: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        payload = json.dumps(body)
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("POST", self.prefix + path, payload, self.headers)
                response = self.conn.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - started
                return response.status, (json.loads(data) if data else {}), elapsed
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _error(tally: Tally, what: str) -> None:
    tally.errors += 1
    if len(tally.error_samples) < 5:
        tally.error_samples.append(what[:300])


def produce(base_url: str, token: str, queue: str, batch: int, seconds: float) -> Tally:
    """Send batches of `batch` messages until time is up."""
    client, tally = Client(base_url, token), Tally()
    body = {"messages": [{"body": "x" * 64} for _ in range(batch)]}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, data, elapsed = client.post(f"/queues/{queue}/messages/", body)
        except OSError as exc:
            _error(tally, f"send: {exc!r}")
            continue
        if status == 201:
            tally.sent += len(data["ids"])
            tally.latencies["send"].append(elapsed)
        else:
            _error(tally, f"send {status}: {data}")
    return tally


def consume(base_url: str, token: str, queue: str, batch: int, seconds: float) -> Tally:
    """Receive up to `batch` and ack them, until time is up."""
    client, tally = Client(base_url, token), Tally()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, data, elapsed = client.post(
                f"/queues/{queue}/receive/", {"max_messages": batch, "consumer": "bench", "wait_seconds": 1}
            )
            if status != 200:
                _error(tally, f"receive {status}: {data}")
                continue
            tally.latencies["receive"].append(elapsed)
            receipts = [m["receipt"] for m in data["messages"]]
            if not receipts:
                continue
            status, data, elapsed = client.post(f"/queues/{queue}/ack/", {"receipts": receipts})
        except OSError as exc:
            _error(tally, f"consume: {exc!r}")
            continue
        if status == 200:
            tally.acked += sum(1 for r in data["results"] if r["status"] in ("acked", "acked_late"))
            tally.latencies["ack"].append(elapsed)
        else:
            _error(tally, f"ack {status}: {data}")
    return tally


def percentile(values: list[float], fraction: float) -> float | None:
    """The value below which `fraction` of `values` fall (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
