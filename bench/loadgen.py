"""A cheap WebSocket load generator: raw asyncio protocol, one process, many sockets.

Why not ``aiohttp.ClientSession`` per connection: at 100k frames/s the client
library's per-frame cost (reader queue, message objects, a task per socket)
exceeds the server's, and the benchmark ends up measuring the generator. Here a
connection is one ``asyncio.Protocol`` object; the upgrade request is written by
hand; server frames are parsed in place from the receive buffer without copying
the payload; a delivered chat message costs two ``bytes.find`` calls, one
``int()`` and one ``list.append``.

Every benchmark message body is ``bench:<send monotonic ns>:<sender>:<n>``.
The generator is one process, so ``time.monotonic_ns()`` at receipt minus the
stamped value is the end-to-end latency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

MARK = b"bench:"
MARK_LEN = len(MARK)

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (RFC 6455 5.3) using big ints."""
    n = len(payload)
    if n == 0:
        return payload
    k = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A masked, final client frame."""
    n = len(payload)
    key = os.urandom(4)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


class Sink:
    """Where delivered benchmark messages are counted (shared by all connections).

    ``window_start`` filters stragglers: only messages stamped at or after it
    count, so a late delivery from a previous step never inflates this one.
    """

    __slots__ = ("done", "errors", "frames", "lat", "recording", "recv", "target", "window_start")

    def __init__(self) -> None:
        self.window_start = 0
        self.lat: list[int] = []
        self.recv = 0
        self.frames = 0
        self.errors: dict[str, int] = {}
        self.recording = False
        self.target = 1 << 62  # received count that sets ``done``
        self.done: asyncio.Event | None = None

    def reset(self, window_start: int) -> None:
        self.window_start = window_start
        self.lat = []
        self.recv = 0
        self.errors = {}
        self.recording = True
        self.target = 1 << 62
        self.done = asyncio.Event()

    async def wait_for(self, count: int, max_wait: float) -> None:
        """Wait until ``count`` deliveries were counted or ``max_wait`` passed."""
        assert self.done is not None
        self.target = count
        if self.recv >= count:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), max_wait)


class WSConn(asyncio.Protocol):
    """One client WebSocket. ``on_text(conn, buf, start, end)`` gets control
    frames (ready, ack, pong, ...); benchmark deliveries (frames containing both
    ``deliver_mark`` and ``bench:``) go straight to the ``Sink``."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None,
        sink: Sink,
        deliver_mark: bytes,
        on_text: Callable[[WSConn, bytes, int, int], None] | None = None,
        eio: bool = False,
    ) -> None:
        self.sink = sink
        self.deliver_mark = deliver_mark
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._hs = True
        self._buf = b""
        self._frag: list[bytes] | None = None
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.status: int | None = None
        self.close_code: int | None = None
        self.user: Any = None  # free slot for scenario bookkeeping
        self.waiters: list[tuple[bytes, bool, asyncio.Future[bytes]]] = []
        self.backlog: list[bytes] = []
        self.keep_backlog = True  # until the handshake is done: see settled()
        self.eio = eio  # answer Engine.IO pings ("2" -> "3")

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                ConnectionError(f"closed before upgrade (status {self.status})")
            )
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        for _, _, fut in self.waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.waiters.clear()

    def data_received(self, data: bytes) -> None:
        if self._hs:
            data = self._buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            head = data[:end]
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = 0
            if self.status != 101:
                self._hs = False
                self._buf = b""
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"upgrade refused: {head[:12]!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._hs = False
            self.opened.set_result(None)
            data = data[end + 4 :]
            self._buf = b""
            if not data:
                return
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        sink = self.sink
        mark = self.deliver_mark
        now = 0
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            start = pos + hl
            end = start + ln
            if end > n:
                break
            pos = end
            op = b0 & 0x0F
            sink.frames += 1
            if op == OP_TEXT and b0 & 0x80:
                i = buf.find(MARK, start, end)
                if i >= 0 and buf.find(mark, start, end) >= 0:
                    i += MARK_LEN
                    ts = int(buf[i : buf.find(b":", i, end)])
                    if ts >= sink.window_start and sink.recording:
                        if not now:
                            now = time.monotonic_ns()
                        sink.lat.append(now - ts)
                        sink.recv += 1
                        if sink.recv >= sink.target:
                            sink.done.set()  # type: ignore[union-attr]
                else:
                    self._control(buf, start, end)
            elif op == OP_PING:
                self._send(buf[start:end], OP_PONG)
            elif op == OP_CLOSE:
                self.close_code = (buf[start] << 8 | buf[start + 1]) if ln >= 2 else 1005
                self._send(buf[start : start + 2], OP_CLOSE)
                assert self.transport is not None
                self.transport.close()
            elif op in (OP_TEXT, OP_BINARY):  # first fragment
                self._frag = [buf[start:end]]
            elif op == OP_CONT and self._frag is not None:
                self._frag.append(buf[start:end])
                if b0 & 0x80:
                    whole = b"".join(self._frag)
                    self._frag = None
                    self._control(whole, 0, len(whole))
        self._buf = buf[pos:] if pos < n else b""

    # --- helpers ---
    def _control(self, buf: bytes, start: int, end: int) -> None:
        if self.eio and end - start == 1 and buf[start] == 0x32:  # Engine.IO ping "2"
            self._send(b"3", OP_TEXT)
            return
        if self.waiters:
            for idx, (needle, prefix, fut) in enumerate(self.waiters):
                if (
                    buf.startswith(needle, start, end)
                    if prefix
                    else buf.find(needle, start, end) >= 0
                ):
                    del self.waiters[idx]
                    if not fut.done():
                        fut.set_result(buf[start:end])
                    return
        if self.on_text is not None:
            self.on_text(self, buf, start, end)
        elif self.keep_backlog:
            # kept for a later expect(): frames often arrive before anyone waits
            # (e.g. `ready` followed by a burst of presence events)
            self.backlog.append(buf[start:end])

    def _send(self, payload: bytes, opcode: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(payload, opcode))

    def send_text(self, payload: bytes) -> None:
        self._send(payload, OP_TEXT)

    def expect(self, needle: bytes, prefix: bool = False) -> asyncio.Future[bytes]:
        """A future for the next control frame containing (or, with ``prefix``,
        starting with) ``needle``; frames already in the backlog count."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        for idx, frame in enumerate(self.backlog):
            if frame.startswith(needle) if prefix else needle in frame:
                del self.backlog[idx]
                fut.set_result(frame)
                return fut
        self.waiters.append((needle, prefix, fut))
        return fut

    def settled(self) -> None:
        """Handshake done: drop kept frames and keep no more (an idle client
        receiving presence events must not grow). Later expect() calls must be
        made before the frame they wait for can arrive."""
        self.keep_backlog = False
        self.backlog.clear()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send((1000).to_bytes(2, "big"), OP_CLOSE)
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    sink: Sink,
    deliver_mark: bytes,
    headers: dict[str, str] | None = None,
    on_text: Callable[[WSConn, bytes, int, int], None] | None = None,
    open_timeout: float = 60.0,
    eio: bool = False,
) -> WSConn:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: WSConn(host, port, path, headers, sink, deliver_mark, on_text, eio), host, port
        ),
        open_timeout,
    )
    await asyncio.wait_for(proto.opened, open_timeout)
    return proto


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[idx])


def self_cpu_seconds() -> float:
    """This process's CPU time (all threads), with ns resolution."""
    return time.process_time()


class RateSender:
    """Open-loop sender: ``rate`` messages/s spread round-robin over ``senders``.

    ``make_frame(sender_index, n, ts_ns)`` returns the bytes to put on the wire
    (already WebSocket-framed). The timestamp is taken at the moment of
    sending, so generator scheduling jitter is not charged to the server.
    """

    def __init__(
        self,
        conns: list[WSConn],
        make_frame: Callable[[int, int, int], bytes],
        tick: float = 0.002,
    ) -> None:
        self.conns = conns
        self.make_frame = make_frame
        self.tick = tick
        self.sent = 0
        self.sent_by: list[int] = [0] * len(conns)

    async def run(self, rate: float, duration: float) -> int:
        """Send for ``duration`` seconds; returns the number of messages written
        (a message due on a connection that has closed is skipped, not sent)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + duration
        sent = 0
        written = 0
        conns = self.conns
        nconn = len(conns)
        make = self.make_frame
        while True:
            now = loop.time()
            due = int(duration * rate) if now >= end else int((now - t0) * rate)
            while sent < due:
                idx = sent % nconn
                c = conns[idx]
                if c.transport is not None and not c.transport.is_closing():
                    c.transport.write(make(idx, sent, time.monotonic_ns()))
                    self.sent_by[idx] += 1
                    written += 1
                sent += 1
            if now >= end:
                break
            await asyncio.sleep(self.tick)
        self.sent += written
        return written
