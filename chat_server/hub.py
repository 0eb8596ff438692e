"""In-process fan-out of committed events to this process's WebSocket connections.

Publishing never awaits per recipient: an event is serialized once and its
frame is put on each recipient's bounded outbox. One writer task per
connection drains the outbox, and that is where ordering is enforced
(DESIGN.md invariant 3): each connection remembers the last seq it delivered
per room, drops duplicates, and fills a gap from the database before
delivering past it. Resume and catch-up after a join use the same fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from .db import Database
from .models import Message

log = logging.getLogger("chat_server.hub")

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
# Close code for a revoked session: a policy decision, not an error.
CLOSE_REVOKED = WSCloseCode.POLICY_VIOLATION


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def message_frame(kind: str, message: Message) -> str:
    return dumps({"type": kind, "message": message.to_json()})


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

    @classmethod
    def make(cls, payload: dict[str, Any], **target: Any) -> Event:
        return cls(payload, frame=dumps(payload), **target)


@dataclass(frozen=True, slots=True)
class _Ordered:
    room_id: int
    seq: int
    frame: str


@dataclass(frozen=True, slots=True)
class _CatchUp:
    room_id: int
    limit: int | None  # None: everything missed; else replay at most this many, `gap` before


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Connection:
    """One authenticated WebSocket: its rooms, its bounded outbox and its writer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        user_id: int,
        session_id: int,
        db: Database,
        outbox_limit: int,
    ) -> None:
        self.ws = ws
        self.request = request
        self.user_id = user_id
        self.session_id = session_id
        self.db = db
        self.rooms: dict[int, int] = {}  # room_id -> last seq delivered
        self.outbox: asyncio.Queue[Any] = asyncio.Queue(outbox_limit)
        # Rooms with live message.new events held until the first frame after
        # `ready` is handled, so a resume's replay comes first (API.md). Only
        # the room is kept: release() catches up from the database, which
        # bounds memory however long the hold lasts.
        self.held: set[int] | None = set()
        self.closed = False
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.writer = asyncio.create_task(self._write_loop())

    def push(self, item: Any) -> None:
        if self.closed:
            return
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            log.info("closing slow consumer user=%s", self.user_id)
            self.abort(WSCloseCode.TRY_AGAIN_LATER, "too slow: reconnect and resume")

    def deliver_message(self, item: _Ordered) -> None:
        if self.held is not None:
            self.held.add(item.room_id)
        else:
            self.push(item)

    def release(self) -> None:
        """End the hold: catch up on held rooms after whatever replay is queued."""
        held, self.held = self.held, None
        for room_id in sorted(held or ()):
            self.push(_CatchUp(room_id, None))

    def close_after_flush(self, code: int, reason: str) -> None:
        self.release()
        self.push(_Close(code, reason))

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
        if self.writer is not None:
            self.writer.cancel()
        self.closer = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.request.transport is not None:
                self.request.transport.abort()

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, str):
                    await self.ws.send_str(item)
                elif isinstance(item, _Ordered):
                    await self._deliver(item)
                elif isinstance(item, _CatchUp):
                    await self._catch_up(item)
                else:
                    await self._close(item.code, item.reason)
                    return
        except (ConnectionError, RuntimeError):
            self.closed = True  # the peer went away; the reader side unregisters

    async def _deliver(self, item: _Ordered) -> None:
        last = self.rooms.get(item.room_id)
        if last is None or item.seq <= last:
            return  # not (or no longer) in the room, or a duplicate
        if item.seq > last + 1:
            await self._fill(item.room_id, until=item.seq - 1)
        if item.seq == self.rooms.get(item.room_id, item.seq) + 1:
            await self.ws.send_str(item.frame)
            self.rooms[item.room_id] = item.seq

    async def _catch_up(self, item: _CatchUp) -> None:
        last = self.rooms.get(item.room_id)
        if last is None:
            return
        if item.limit is not None:
            newest = await self.db.room_last_seq(item.room_id)
            if newest is not None and newest - last > item.limit:
                first_replayed = newest - item.limit + 1
                await self.ws.send_str(
                    dumps(
                        {
                            "type": "gap",
                            "room_id": item.room_id,
                            "from_seq": last + 1,
                            "to_seq": first_replayed - 1,
                        }
                    )
                )
                self.rooms[item.room_id] = first_replayed - 1
        await self._fill(item.room_id, until=None)

    async def _fill(self, room_id: int, until: int | None) -> None:
        """Send the room's committed messages after our last seq, up to `until`."""
        while (last := self.rooms.get(room_id)) is not None:
            before = None if until is None else until + 1
            messages, has_more = await self.db.history(
                room_id, after_seq=last, before_seq=before, limit=FILL_PAGE
            )
            for message in messages:
                if self.rooms.get(room_id) != message.seq - 1:
                    return  # left the room meanwhile, or history has a hole: stop here
                await self.ws.send_str(message_frame("message.new", message))
                self.rooms[room_id] = message.seq
            if not has_more:
                return


class Hub:
    """This process's connections, indexed by user and by room."""

    def __init__(self, db: Database, outbox_limit: int) -> None:
        self.db = db
        self.outbox_limit = outbox_limit
        self.by_user: dict[int, set[Connection]] = {}
        self.by_room: dict[int, set[Connection]] = {}
        self.online: set[int] = set()  # users with a connection past `ready`
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    # --- connections ---------------------------------------------------------------

    def connect(
        self, ws: web.WebSocketResponse, request: web.Request, user_id: int, session_id: int
    ) -> Connection:
        """Index a new connection before its rooms' seqs are read, so nothing slips by.

        Its writer starts (`Connection.start`) once `ready` has been sent.
        """
        conn = Connection(ws, request, user_id, session_id, self.db, self.outbox_limit)
        self.by_user.setdefault(user_id, set()).add(conn)
        return conn

    def set_rooms(self, conn: Connection, room_seqs: dict[int, int]) -> None:
        """Start following the user's rooms after the given seqs; announce them online."""
        for room_id, seq in room_seqs.items():
            conn.rooms.setdefault(room_id, seq)
            self.by_room.setdefault(room_id, set()).add(conn)
        if conn.user_id not in self.online:
            self.online.add(conn.user_id)
            self._presence(conn.user_id, "online", conn.rooms)

    def disconnect(self, conn: Connection) -> None:
        conn.closed = True
        if conn.writer is not None:
            conn.writer.cancel()
        for room_id in conn.rooms:
            self._discard(self.by_room, room_id, conn)
        self._discard(self.by_user, conn.user_id, conn)
        if conn.user_id not in self.by_user and conn.user_id in self.online:
            self.online.discard(conn.user_id)
            self._presence(conn.user_id, "offline", conn.rooms)

    @staticmethod
    def _discard(index: dict[int, set[Connection]], key: int, conn: Connection) -> None:
        conns = index.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del index[key]

    def is_online(self, user_id: int) -> bool:
        return user_id in self.online

    def resume(self, conn: Connection, rooms: dict[int, int]) -> None:
        """Replay what the client missed (from its seqs) before its held live events."""
        for room_id, seen in rooms.items():
            if room_id in conn.rooms:
                conn.rooms[room_id] = min(seen, conn.rooms[room_id])
                conn.push(_CatchUp(room_id, RESUME_REPLAY_LIMIT))
        conn.push(dumps({"type": "resumed"}))

    # --- membership ----------------------------------------------------------------

    def joined(self, user_id: int, room_id: int, last_seq: int) -> None:
        """The user's connections start following the room after `last_seq`."""
        for conn in self.by_user.get(user_id, ()):
            if room_id not in conn.rooms:
                conn.rooms[room_id] = last_seq
                self.by_room.setdefault(room_id, set()).add(conn)
                conn.push(_CatchUp(room_id, None))  # anything committed since `last_seq`

    def left(self, user_id: int, room_id: int) -> None:
        for conn in self.by_user.get(user_id, ()):
            conn.rooms.pop(room_id, None)
            self._discard(self.by_room, room_id, conn)

    def close_sessions(self, session_ids: list[int]) -> None:
        """Close the open connections of revoked sessions at once."""
        revoked = set(session_ids)
        for conns in list(self.by_user.values()):
            for conn in list(conns):
                if conn.session_id in revoked:
                    conn.abort(CLOSE_REVOKED, "session revoked")

    # --- events --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback(payload)` for every committed event; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, event: Event) -> None:
        """Deliver a committed event to this process's connections."""
        for callback in list(self._subscribers):
            try:
                callback(event.payload)
            except Exception:
                log.exception("event subscriber failed")
        if event.seq is not None and event.room_id is not None:
            item = _Ordered(event.room_id, event.seq, event.frame)
            for conn in self.by_room.get(event.room_id, ()):
                conn.deliver_message(item)
            return
        for conn in self._recipients(event):
            conn.push(event.frame)

    def _recipients(self, event: Event) -> set[Connection]:
        recipients: set[Connection] = set()
        if event.room_id is not None:
            recipients.update(
                c for c in self.by_room.get(event.room_id, ()) if c.user_id != event.exclude_user
            )
        for user_id in event.user_ids:
            recipients.update(self.by_user.get(user_id, ()))
        return recipients

    def _presence(self, user_id: int, status: str, rooms: Iterable[int]) -> None:
        """Tell everyone else connected to one of `rooms` (the user's) about the user."""
        frame = dumps({"type": "presence", "user_id": user_id, "status": status})
        recipients = {
            c for room_id in rooms for c in self.by_room.get(room_id, ()) if c.user_id != user_id
        }
        for conn in recipients:
            conn.push(frame)

    def presence_of_roommates(self, conn: Connection) -> None:
        """Tell a new connection which of its room-mates are online."""
        online = {
            other.user_id
            for room_id in conn.rooms
            for other in self.by_room.get(room_id, ())
            if other.user_id != conn.user_id
        }
        for user_id in sorted(online):
            conn.push(dumps({"type": "presence", "user_id": user_id, "status": "online"}))

    async def shutdown(self) -> None:
        """Close every connection with 1001 after flushing what is queued."""
        conns = [c for conns in self.by_user.values() for c in conns]
        for conn in conns:
            conn.close_after_flush(WSCloseCode.GOING_AWAY, "server shutting down")
        writers = [c.writer for c in conns if c.writer is not None]
        if writers:
            _, pending = await asyncio.wait(writers, timeout=SHUTDOWN_FLUSH_TIMEOUT)
            for task in pending:
                task.cancel()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY)
