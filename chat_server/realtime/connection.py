"""One WebSocket connection's delivery: frames, ordering, gap fill, backpressure.

Each connection remembers the last seq it delivered per room, drops
duplicates, and fills a gap from the database before delivering past it
(DESIGN.md invariant 3); resume and the catch-up after a join use the same
fill. Fast path: while nothing is queued and the socket keeps up, a frame's
bytes, encoded once per event, are written straight to the transport.
Anything else goes through a bounded outbox drained by a writer task that
exists only while there is work; a full outbox closes the socket with 1013.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from .db import Database
from .errors import is_database_outage
from .models import Message

if TYPE_CHECKING:
    from .observability import Metrics

log = logging.getLogger("chat_server.connection")

# Largest replay a resume delivers per room; older missed messages are named
# in a `gap` event for the client to page over REST (API.md "resume").
RESUME_REPLAY_LIMIT = 500
# Messages fetched per query while filling a gap.
FILL_PAGE = 100
# How long a close may take before the transport is cut (a peer that stopped
# reading cannot receive the close frame either).
CLOSE_TIMEOUT = 2.0
# How long shutdown waits for outboxes to flush before closing regardless.
SHUTDOWN_FLUSH_TIMEOUT = 5.0
# Bytes a socket may have waiting in its transport before frames queue in the
# outbox instead (aiohttp's own high-water mark is 64 KiB).
WRITE_BUFFER_LIMIT = 64 * 1024


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def message_frame(kind: str, message: Message) -> str:
    return dumps({"type": kind, "message": message.to_json()})


def text_frame(text: str) -> bytes:
    """A complete unmasked WebSocket text frame (RFC 6455), as a server sends it.

    Encoded once per event, the same bytes go to every recipient's transport.
    """
    data = text.encode()
    size = len(data)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + data


@dataclass(frozen=True, slots=True)
class Event:
    """A committed event: its frame (serialized once) and who receives it.

    `room_id` sends to the room's connections (minus `exclude_user`'s);
    `user_ids` sends to those users' connections. `seq` marks a
    `message.new`, delivered in seq order with gaps filled.
    """

    payload: dict[str, Any]
    room_id: int | None = None
    user_ids: tuple[int, ...] = ()
    seq: int | None = None
    exclude_user: int | None = None
    frame: str = field(default="", compare=False)
    wire: bytes = field(default=b"", compare=False)

    @classmethod
    def make(cls, payload: dict[str, Any], frame: str = "", **target: Any) -> Event:
        frame = frame or dumps(payload)
        return cls(payload, frame=frame, wire=text_frame(frame), **target)


@dataclass(frozen=True, slots=True)
class Ordered:
    room_id: int
    seq: int
    frame: str
    wire: bytes


@dataclass(frozen=True, slots=True)
class CatchUp:
    room_id: int
    limit: int | None  # None: everything missed; else replay at most this many, `gap` before


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


class Connection:
    """One authenticated WebSocket: its rooms, its bounded outbox and its writer.

    Fast path: while nothing is queued and the socket's buffer is short, a
    frame's pre-encoded bytes are written straight to the transport. Anything
    else (a full buffer, a gap to fill, a replay, a close) goes through the
    outbox, drained by a writer task that exists only while there is work.
    """

    __slots__ = (
        "closed",
        "closer",
        "db",
        "held",
        "metrics",
        "outbox",
        "outbox_limit",
        "ready",
        "request",
        "rooms",
        "session_id",
        "unflushed",
        "user_id",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        user_id: int,
        session_id: int,
        db: Database,
        outbox_limit: int,
        metrics: Metrics,
    ) -> None:
        self.ws = ws
        self.request = request
        self.user_id = user_id
        self.session_id = session_id
        self.db = db
        self.metrics = metrics
        self.outbox_limit = outbox_limit
        self.rooms: dict[int, int] = {}  # room_id -> last seq delivered
        self.outbox: deque[Any] | None = None  # created when first needed
        # Rooms with live message.new events held until the first frame after
        # `ready` is handled, so a resume's replay comes first (API.md). Only
        # the room is kept: release() catches up from the database, which
        # bounds memory however long the hold lasts.
        self.held: set[int] | None = set()
        self.ready = False  # nothing is written before `ready`
        self.unflushed: list[bytes] | None = None  # frames for this turn's single write
        self.closed = False
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None

    def mark_ready(self) -> None:
        """`ready` has been sent: queued frames may follow."""
        self.ready = True
        self._wake_writer()

    def _write_now(self, wire: bytes) -> bool:
        """Write a pre-encoded frame now if nothing is queued and the socket keeps up.

        Frames written in one turn of the event loop leave in one system call
        (`_flush` runs at the end of the turn): under load a socket gets one
        write for several messages, and a sender one for its echo and its ack.
        """
        if self.writer is not None or self.outbox or not self.ready or self.closed:
            return False
        transport = self.request.transport
        if (
            transport is None
            or transport.is_closing()
            or self.ws.closed
            or transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT
        ):
            return False
        if self.unflushed is None:
            self.unflushed = [wire]
            asyncio.get_running_loop().call_soon(self._flush)
        elif len(self.unflushed) < self.outbox_limit:
            self.unflushed.append(wire)
        else:
            return False
        return True

    def _flush(self) -> None:
        frames, self.unflushed = self.unflushed, None
        transport = self.request.transport
        if (
            frames
            and not self.closed
            and not self.ws.closed
            and transport is not None
            and not transport.is_closing()
        ):
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def send(self, frame: str, wire: bytes) -> None:
        """Send an unordered frame (typing, presence, member and room events, replies)."""
        if not self._write_now(wire):
            self.push(frame)

    def push(self, item: Any) -> None:
        if self.closed:
            return
        if self.outbox is None:
            self.outbox = deque()
        elif len(self.outbox) >= self.outbox_limit:
            log.info("closing slow consumer user=%s", self.user_id)
            self.metrics.slow_consumers.inc()
            self.abort(WSCloseCode.TRY_AGAIN_LATER, "too slow: reconnect and resume")
            return
        self.outbox.append(item)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self.writer is None and self.outbox and self.ready and not self.closed:
            self.writer = asyncio.create_task(self._write_loop())

    def deliver_message(self, item: Ordered) -> None:
        if self.held is not None:
            self.held.add(item.room_id)
            return
        last = self.rooms.get(item.room_id)
        if last is None or item.seq <= last:
            return  # not in the room, or a duplicate
        if item.seq == last + 1 and self._write_now(item.wire):
            self.rooms[item.room_id] = item.seq
        else:
            self.push(item)

    def release(self) -> None:
        """End the hold: catch up on held rooms after whatever replay is queued."""
        held, self.held = self.held, None
        for room_id in sorted(held or ()):
            self.push(CatchUp(room_id, None))

    def close_after_flush(self, code: int, reason: str) -> None:
        self.release()
        self.push(Close(code, reason))

    async def flush_and_close(self, code: int, reason: str) -> None:
        """Send what is queued, then close; waits (bounded) for the writer to finish."""
        self.close_after_flush(code, reason)
        if self.writer is not None:
            await asyncio.wait([self.writer], timeout=SHUTDOWN_FLUSH_TIMEOUT)

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued."""
        if self.closed:
            return
        self.closed = True
        self.outbox = None
        if self.writer is not None:
            self.writer.cancel()
        self.closer = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        self._flush()  # what this turn already accepted goes before the close frame
        self.closed = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.request.transport is not None:
                self.request.transport.abort()

    async def _write_loop(self) -> None:
        try:
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, str):
                    await self.ws.send_str(item)
                elif isinstance(item, Ordered):
                    await self._deliver(item)
                elif isinstance(item, CatchUp):
                    await self._catch_up(item)
                else:
                    await self._close(item.code, item.reason)
                    return
        except (ConnectionError, RuntimeError):
            self.closed = True  # the peer went away; the reader side unregisters
        except Exception as exc:  # a gap fill could not read the database
            if is_database_outage(exc):
                log.warning("closing a connection: database unavailable during a fill")
                code = WSCloseCode.TRY_AGAIN_LATER
            else:
                log.exception("connection writer failed")
                code = WSCloseCode.INTERNAL_ERROR
            self.closed = True
            await self._close(code, "try again: reconnect and resume")
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox = None  # idle sockets keep no empty queue

    async def _deliver(self, item: Ordered) -> None:
        last = self.rooms.get(item.room_id)
        if last is None or item.seq <= last:
            return  # not (or no longer) in the room, or a duplicate
        if item.seq > last + 1:
            await self._fill(item.room_id, until=item.seq - 1)
        if item.seq == self.rooms.get(item.room_id, item.seq) + 1:
            await self.ws.send_str(item.frame)
            self.rooms[item.room_id] = item.seq

    async def _catch_up(self, item: CatchUp) -> None:
        last = self.rooms.get(item.room_id)
        if last is None:
            return
        outcome = "nothing_missed"
        if item.limit is not None:
            newest = await self.db.room_last_seq(item.room_id)
            if newest is not None and newest - last > item.limit:
                first_replayed = newest - item.limit + 1
                gap = {
                    "type": "gap",
                    "room_id": item.room_id,
                    "from_seq": last + 1,
                    "to_seq": first_replayed - 1,
                }
                await self.ws.send_str(dumps(gap))
                self.rooms[item.room_id] = first_replayed - 1
                outcome = "gap"
        replayed = await self._fill(item.room_id, until=None)
        if item.limit is not None:
            self.metrics.resumes.labels(
                "replayed" if replayed and outcome != "gap" else outcome
            ).inc()

    async def _fill(self, room_id: int, until: int | None) -> int:
        """Send the room's committed messages after our last seq, up to `until`.

        Returns how many were sent.
        """
        sent = 0
        while (last := self.rooms.get(room_id)) is not None:
            before = None if until is None else until + 1
            messages, has_more = await self.db.history(
                room_id, after_seq=last, before_seq=before, limit=FILL_PAGE
            )
            for message in messages:
                if self.rooms.get(room_id) != message.seq - 1:
                    return sent  # left the room meanwhile, or history has a hole: stop here
                await self.ws.send_str(message_frame("message.new", message))
                self.rooms[room_id] = message.seq
                sent += 1
            if not has_more:
                return sent
        return sent
