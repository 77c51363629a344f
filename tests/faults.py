"""A fault-injecting HTTP proxy on 127.0.0.1, put between the store and the test S3 endpoint.

It relays requests to the upstream server and, for a share of them chosen by a seeded random
sequence, injects one fault:

- `reset_before`: the connection is reset before any byte of the response;
- `reset_mid_header`: part of the response's status line and headers, then a reset;
- `reset_mid_body`: the headers and part of the body, then a reset (a body-less response is cut
  in its headers instead);
- `delay`: the request waits a moment before it is relayed (it then succeeds);
- `slowdown`: the proxy answers itself with `503 SlowDown` and an S3 XML error body.

It is bounded: it injects at most `max_faults` faults, relays at most `max_requests` requests,
and stops by itself after `lifetime_seconds`. `injected` counts the faults by kind.

    with FaultProxy(moto_endpoint, rate=0.25, seed=7) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        ...
    print(proxy.summary())
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from urllib.parse import urlsplit

FAULT_KINDS = ("reset_before", "reset_mid_header", "reset_mid_body", "delay", "slowdown")
SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>"
)
_HEAD_LIMIT = 64 * 1024
_SOCKET_TIMEOUT_SECONDS = 30.0
_RELAY_BYTES = 256 * 1024


@dataclass(frozen=True)
class _Plan:
    """What happens to one request: a fault kind (or None) and where in the response it strikes."""

    kind: str | None
    fraction: float  # where a cut falls, as a share of the headers or of the body
    delay_seconds: float
    method: str = "GET"


class _Closed(Exception):
    """The other side closed the connection."""


class _Reader:
    """Buffered reads from a socket: up to a delimiter, an exact count, or whatever comes next."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(_RELAY_BYTES)
        if not data:
            raise _Closed()
        self.buffer += data

    def until(self, delimiter: bytes) -> bytes:
        """Bytes up to and including `delimiter`; raises _Closed at end of stream."""
        while delimiter not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise ValueError("HTTP head too long")
            self._fill()
        end = self.buffer.index(delimiter) + len(delimiter)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def some(self, limit: int) -> bytes:
        """At least one and at most `limit` bytes."""
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer[:limit], self.buffer[limit:]
        return data


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


def _abort(sock: socket.socket) -> None:
    """Make the socket's close a reset (RST, not FIN), as a broken network or a crashed server would,
    and wake the thread that owns it, which is blocked reading it; that thread then closes it.

    Only the owning thread closes a socket: closing it under another thread's read could let that
    read land on a new socket given the same descriptor.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with a reset, from the thread that owns the socket."""
    _abort(sock)
    sock.close()


class FaultProxy:
    """A proxy to `upstream` (an http://host:port URL) that injects faults into a share of requests.

    Args:
        upstream: the real endpoint, e.g. the moto server's URL.
        rate: the share of requests that get a fault, from 0 to 1.
        kinds: the fault kinds to draw from (default all of `FAULT_KINDS`).
        seed: seeds the sequence of draws, so a run repeats its faults in request order.
        max_faults: no faults after this many.
        max_requests: the proxy refuses connections after relaying this many requests.
        lifetime_seconds: the proxy stops by itself after this long.
        delay_seconds: the longest `delay` fault.
        after_requests: the first this many requests get no fault (to strike mid-way through a stage).
    """

    def __init__(self, upstream: str, *, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0,
                 max_faults: int = 10_000, max_requests: int = 100_000, lifetime_seconds: float = 900.0,
                 delay_seconds: float = 0.3, after_requests: int = 0):
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"fault kinds {sorted(unknown)} unknown or rate {rate} outside 0..1")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        if self.upstream[0] not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the fault proxy only relays to this machine, not {upstream}")
        self.rate, self.kinds, self.max_faults, self.max_requests = rate, tuple(kinds), max_faults, max_requests
        self.lifetime_seconds, self.delay_seconds, self.after_requests = lifetime_seconds, delay_seconds, after_requests
        self.injected: Counter = Counter()
        self.requests = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self.port = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    @property
    def total_faults(self) -> int:
        return sum(self.injected.values())

    def summary(self) -> str:
        counts = ", ".join(f"{kind}={self.injected.get(kind, 0)}" for kind in FAULT_KINDS)
        return f"fault proxy: {self.requests} requests, {self.total_faults} faults ({counts})"

    # Accepting and planning ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set() and time.monotonic() - self._started < self.lifetime_seconds:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if self.requests >= self.max_requests:
                _reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), name="fault-proxy-connection", daemon=True).start()
        self._stopping.set()

    def _plan(self, method: str) -> _Plan:
        with self._lock:
            self.requests += 1
            eligible = self.requests > self.after_requests and self.total_faults < self.max_faults
            faulty = self._random.random() < self.rate and eligible
            kind = self._random.choice(self.kinds) if faulty else None
            fraction, delay = self._random.random(), self._random.uniform(0.01, self.delay_seconds)
            if kind is not None:
                self.injected[kind] += 1
        return _Plan(kind, fraction, delay, method)

    # Relaying ----------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_SOCKET_TIMEOUT_SECONDS)
        try:
            upstream = socket.create_connection(self.upstream, timeout=_SOCKET_TIMEOUT_SECONDS)
        except OSError:
            _reset(client)
            return
        plans: deque[_Plan] = deque()
        responses = threading.Thread(target=self._relay_responses, args=(upstream, client, plans), daemon=True)
        responses.start()
        try:
            self._relay_requests(client, upstream, plans)
        except (OSError, _Closed, ValueError):
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            responses.join(timeout=_SOCKET_TIMEOUT_SECONDS)
            for sock in (client, upstream):
                try:
                    sock.close()
                except OSError:
                    pass

    def _relay_requests(self, client: socket.socket, upstream: socket.socket, plans: deque[_Plan]) -> None:
        reader = _Reader(client)
        while not self._stopping.is_set():
            head = reader.until(b"\r\n\r\n")
            request_line, fields = _headers(head)
            plan = self._plan(request_line.split(" ", 1)[0])
            if plan.kind == "reset_before":
                _reset(client)
                return
            if plan.kind == "slowdown":
                self._answer_slowdown(client, reader, fields)
                return
            if plan.kind == "delay":
                time.sleep(plan.delay_seconds)
            plans.append(plan)
            upstream.sendall(head)
            self._relay_body(reader, upstream, fields)

    @staticmethod
    def _relay_body(reader: _Reader, target: socket.socket, fields: dict[str, str]) -> None:
        """Relay one message body framed by Content-Length or chunked transfer encoding."""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size_line = reader.until(b"\r\n")
                target.sendall(size_line)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (line := reader.until(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                        target.sendall(line)
                    target.sendall(b"\r\n")
                    return
                _relay_exact(reader, target, size + 2)
        _relay_exact(reader, target, int(fields.get("content-length", "0") or 0))

    def _answer_slowdown(self, client: socket.socket, reader: _Reader, fields: dict[str, str]) -> None:
        client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                       + f"Content-Length: {len(SLOWDOWN_BODY)}\r\n".encode()
                       + b"x-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n" + SLOWDOWN_BODY)
        # Read what the client still sends (a body), so closing does not turn into a reset.
        client.shutdown(socket.SHUT_WR)
        client.settimeout(1.0)
        deadline = time.monotonic() + 2.0
        try:
            while time.monotonic() < deadline:
                if not reader.some(_RELAY_BYTES):
                    break
        except (OSError, _Closed):
            pass
        client.close()

    def _relay_responses(self, upstream: socket.socket, client: socket.socket, plans: deque[_Plan]) -> None:
        reader = _Reader(upstream)
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                status_line, fields = _headers(head)
                status = int(status_line.split(" ", 2)[1])
                if 100 <= status < 200:  # an interim response (100 Continue) belongs to the same request
                    client.sendall(head)
                    continue
                plan = plans.popleft() if plans else _Plan(None, 0.0, 0.0)
                has_body = plan.method != "HEAD" and status not in (204, 304)
                length = int(fields.get("content-length", "0") or 0) if has_body else 0
                if plan.kind == "reset_mid_header" or (plan.kind == "reset_mid_body" and length == 0):
                    client.sendall(head[: max(1, int(plan.fraction * (len(head) - 1)))])
                    _abort(client)
                    return
                client.sendall(head)
                if plan.kind == "reset_mid_body":
                    _relay_exact(reader, client, int(plan.fraction * length))
                    time.sleep(0.05)  # let the client read the part sent, so most resumes start past 0
                    _abort(client)
                    return
                if has_body and "content-length" not in fields and "chunked" not in fields.get(
                        "transfer-encoding", "").lower():
                    while True:  # a body that ends when the server closes
                        client.sendall(reader.some(_RELAY_BYTES))
                self._relay_body(reader, client, fields if has_body else {})
                if fields.get("connection", "").lower() == "close":
                    client.shutdown(socket.SHUT_WR)
                    return
        except (OSError, _Closed, ValueError, IndexError):
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _relay_exact(reader: _Reader, target: socket.socket, count: int) -> None:
    while count > 0:
        data = reader.some(min(count, _RELAY_BYTES))
        target.sendall(data)
        count -= len(data)
