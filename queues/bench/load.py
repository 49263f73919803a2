"""The load generator: producer and consumer processes speaking HTTP/1.1 with keep-alive.

Each process runs one loop for a fixed time and returns its counts and latencies,
so the figures are what a real client sees: server, database and HTTP included.
"""

from __future__ import annotations

import json
import math
import socket
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
    """One keep-alive HTTP/1.1 connection on a plain socket; reconnects once if the server closed it.

    The load generator shares the machine with the server, so it is kept lean (a
    request is one send and a read until Content-Length): http.client costs several
    times more CPU per request, which the server would lose.
    """

    def __init__(self, base_url: str, token: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, bracketed as in a URL
        self.head = (
            f"Host: {host}:{self.port}\r\nAuthorization: Token {token}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n"
        ).encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        return sock

    def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        payload = json.dumps(body).encode()
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            (self.prefix + path).encode(),
            self.head,
            len(payload),
            payload,
        )
        # A new connection's setup counts: a server that closes after every response (gunicorn's
        # sync worker) pays it on every request.
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(request)
                status, data = self._response()
                elapsed = time.perf_counter() - started
                return status, (json.loads(data) if data else {}), elapsed
            except (ConnectionError, TimeoutError):  # _Closed included
                self._drop()
                if attempt == 2:
                    raise
            except (ValueError, LookupError):
                # Not HTTP, or a body that is not JSON: the rest of the stream cannot be trusted, so the
                # next request starts on a new connection. Not resent: the server may have acted on it.
                self._drop()
                raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        self.buffer = rest
        while len(self.buffer) < length:
            self._read()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            self.sock.close()
            self.sock = None
        return status, data

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed
        self.buffer += chunk


class _Closed(ConnectionError):
    """The server closed the connection (keep-alive timeout): reconnect and resend."""


# What one request can fail with, counted as an error rather than ending the run: a connection refused,
# reset or closed (twice), an answer that is not HTTP or not JSON, or JSON of another shape.
_FAILURES = (OSError, ValueError, LookupError, TypeError)


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
            if status == 201:
                tally.sent += len(data["ids"])
                tally.latencies["send"].append(elapsed)
            else:
                _error(tally, f"send {status}: {data}")
        except _FAILURES as exc:
            _error(tally, f"send: {exc!r}")
    return tally


def consume(base_url: str, token: str, queue: str, batch: int, seconds: float) -> Tally:
    """Receive up to `batch` and ack them, until time is up."""
    client, tally = Client(base_url, token), Tally()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, data, elapsed = client.post(
                # No long poll: its server-side wait would count as latency. On an empty answer the
                # consumer backs off briefly instead.
                f"/queues/{queue}/receive/",
                {"max_messages": batch, "consumer": "bench"},
            )
            if status != 200:
                _error(tally, f"receive {status}: {data}")
                continue
            tally.latencies["receive"].append(elapsed)
            receipts = [m["receipt"] for m in data["messages"]]
            if not receipts:
                time.sleep(0.002)
                continue
            status, data, elapsed = client.post(f"/queues/{queue}/ack/", {"receipts": receipts})
            if status == 200:
                tally.acked += sum(1 for r in data["results"] if r["status"] in ("acked", "acked_late"))
                tally.latencies["ack"].append(elapsed)
            else:
                _error(tally, f"ack {status}: {data}")
        except _FAILURES as exc:
            _error(tally, f"consume: {exc!r}")
    return tally


def percentile(values: list[float], fraction: float) -> float | None:
    """The value below which `fraction` of `values` fall (nearest rank: the ceil(fraction * n)-th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    # Not round(): it rounds halves to even, so the median of five values came out as the second.
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
