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
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from .db import Database
from .errors import is_database_outage
from .models import Message

if TYPE_CHECKING:
    from .observability import Metrics
    from .relay import Relay

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
# Bytes a socket may have waiting in its transport before frames queue in the
# outbox instead (aiohttp's own high-water mark is 64 KiB).
WRITE_BUFFER_LIMIT = 64 * 1024
# Close code for a revoked session: a policy decision, not an error.
CLOSE_REVOKED = WSCloseCode.POLICY_VIOLATION


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
class _Ordered:
    room_id: int
    seq: int
    frame: str
    wire: bytes


@dataclass(frozen=True, slots=True)
class _CatchUp:
    room_id: int
    limit: int | None  # None: everything missed; else replay at most this many, `gap` before


@dataclass(frozen=True, slots=True)
class _Close:
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
        self.outbox: deque[Any] = deque()
        # Rooms with live message.new events held until the first frame after
        # `ready` is handled, so a resume's replay comes first (API.md). Only
        # the room is kept: release() catches up from the database, which
        # bounds memory however long the hold lasts.
        self.held: set[int] | None = set()
        self.ready = False  # nothing is written before `ready`
        self.closed = False
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None

    def mark_ready(self) -> None:
        """`ready` has been sent: queued frames may follow."""
        self.ready = True
        self._wake_writer()

    def _write_now(self, wire: bytes) -> bool:
        """Write a pre-encoded frame at once if nothing is queued and the socket keeps up."""
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
        transport.write(wire)
        return True

    def send(self, frame: str, wire: bytes) -> None:
        """Send an unordered frame (typing, presence, member and room events, replies)."""
        if not self._write_now(wire):
            self.push(frame)

    def push(self, item: Any) -> None:
        if self.closed:
            return
        if len(self.outbox) >= self.outbox_limit:
            log.info("closing slow consumer user=%s", self.user_id)
            self.metrics.slow_consumers.inc()
            self.abort(WSCloseCode.TRY_AGAIN_LATER, "too slow: reconnect and resume")
            return
        self.outbox.append(item)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self.writer is None and self.outbox and self.ready and not self.closed:
            self.writer = asyncio.create_task(self._write_loop())

    def deliver_message(self, item: _Ordered) -> None:
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
        self.outbox.clear()
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
            while self.outbox:
                item = self.outbox.popleft()
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


class Hub:
    """This process's connections, indexed by user and by room.

    `publish` delivers locally and hands the event to the relay (if any);
    `apply_remote` delivers what other processes published. Membership
    changes, revocations and presence travel the same way.
    """

    def __init__(self, db: Database, outbox_limit: int, metrics: Metrics) -> None:
        self.db = db
        self.outbox_limit = outbox_limit
        self.metrics = metrics
        self.relay: Relay | None = None
        self.by_user: dict[int, set[Connection]] = {}
        self.by_room: dict[int, set[Connection]] = {}
        self.presence = Presence()
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    # --- connections ---------------------------------------------------------------

    def connect(
        self, ws: web.WebSocketResponse, request: web.Request, user_id: int, session_id: int
    ) -> Connection:
        """Index a new connection before its rooms' seqs are read, so nothing slips by.

        Its writer starts (`Connection.start`) once `ready` has been sent.
        """
        conn = Connection(
            ws, request, user_id, session_id, self.db, self.outbox_limit, self.metrics
        )
        self.by_user.setdefault(user_id, set()).add(conn)
        self.metrics.websockets_open.inc()
        return conn

    def set_rooms(self, conn: Connection, room_seqs: dict[int, int]) -> None:
        """Start following the user's rooms after the given seqs; announce them online."""
        for room_id, seq in room_seqs.items():
            conn.rooms.setdefault(room_id, seq)
            self.by_room.setdefault(room_id, set()).add(conn)
        rooms = sorted(conn.rooms)
        if self.presence.local_online(conn.user_id):
            self._announce_presence(conn.user_id, "online", rooms)
        if self.relay is not None:
            self.relay.send("presence", user_id=conn.user_id, status="online", rooms=rooms)

    def disconnect(self, conn: Connection) -> None:
        if conn.user_id not in self.by_user or conn not in self.by_user[conn.user_id]:
            return
        conn.closed = True
        if conn.writer is not None:
            conn.writer.cancel()
        self.metrics.websockets_open.dec()
        for room_id in conn.rooms:
            self._discard(self.by_room, room_id, conn)
        self._discard(self.by_user, conn.user_id, conn)
        if conn.user_id in self.by_user:
            return
        rooms = sorted(conn.rooms)
        if self.presence.local_offline(conn.user_id):
            self._announce_presence(conn.user_id, "offline", rooms)
        if self.relay is not None:
            self.relay.send("presence", user_id=conn.user_id, status="offline", rooms=rooms)

    @staticmethod
    def _discard(index: dict[int, set[Connection]], key: int, conn: Connection) -> None:
        conns = index.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del index[key]

    def resume(self, conn: Connection, rooms: dict[int, int]) -> None:
        """Replay what the client missed (from its seqs) before its held live events."""
        for room_id, seen in rooms.items():
            if room_id in conn.rooms:
                conn.rooms[room_id] = min(seen, conn.rooms[room_id])
                conn.push(_CatchUp(room_id, RESUME_REPLAY_LIMIT))
        conn.push(dumps({"type": "resumed"}))

    async def poll(self) -> None:
        """Catch every local connection up from the database, and drop revoked ones.

        The relay calls this while Redis is away and once it is back: what the
        relay could not carry is read from the truth instead.
        """
        if self.by_room:
            last_seqs = await self.db.last_seqs(list(self.by_room))
            for room_id, last_seq in last_seqs.items():
                for conn in list(self.by_room.get(room_id, ())):
                    if conn.rooms.get(room_id, last_seq) < last_seq:
                        conn.push(_CatchUp(room_id, None))
        sessions = {c.session_id for conns in self.by_user.values() for c in conns}
        if sessions:
            self._close_local(await self.db.revoked_among(list(sessions)))

    # --- membership and revocation -----------------------------------------------------

    def joined(self, user_id: int, room_id: int, last_seq: int) -> None:
        """The user's connections (on every process) start following the room."""
        self._joined_local(user_id, room_id, last_seq)
        if self.relay is not None:
            self.relay.send("joined", user_id=user_id, room_id=room_id, last_seq=last_seq)

    def _joined_local(self, user_id: int, room_id: int, last_seq: int) -> None:
        joining = [c for c in self.by_user.get(user_id, ()) if room_id not in c.rooms]
        for conn in joining:
            conn.rooms[room_id] = last_seq
            self.by_room.setdefault(room_id, set()).add(conn)
            conn.push(_CatchUp(room_id, None))  # anything committed since `last_seq`
        # New room-mates learn of each other's presence now, not at their next reconnect.
        if self.presence.online_anywhere(user_id):
            self._announce_presence(user_id, "online", [room_id])
        for conn in joining:
            self.presence_of_roommates(conn, [room_id])

    def left(self, user_id: int, room_id: int) -> None:
        self._left_local(user_id, room_id)
        if self.relay is not None:
            self.relay.send("left", user_id=user_id, room_id=room_id)

    def _left_local(self, user_id: int, room_id: int) -> None:
        for conn in self.by_user.get(user_id, ()):
            conn.rooms.pop(room_id, None)
            self._discard(self.by_room, room_id, conn)

    def close_sessions(self, session_ids: list[int]) -> None:
        """Close the open connections of revoked sessions at once, on every process."""
        self._close_local(session_ids)
        if self.relay is not None and session_ids:
            self.relay.send("revoked", session_ids=list(session_ids))

    def _close_local(self, session_ids: list[int]) -> None:
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
        """Deliver a committed event here and, through the relay, on every other process."""
        self.deliver(event)
        if self.relay is not None:
            self.relay.send(
                "event",
                payload=event.payload,
                room_id=event.room_id,
                user_ids=list(event.user_ids),
                seq=event.seq,
                exclude_user=event.exclude_user,
            )

    def deliver(self, event: Event) -> None:
        """Deliver an event to this process's connections and subscribers."""
        for callback in list(self._subscribers):
            try:
                callback(event.payload)
            except Exception:
                log.exception("event subscriber failed")
        if event.seq is not None and event.room_id is not None:
            item = _Ordered(event.room_id, event.seq, event.frame, event.wire)
            conns = self.by_room.get(event.room_id, ())
            for conn in conns:
                conn.deliver_message(item)
            self.metrics.events_out.inc(len(conns))
            return
        recipients = self._recipients(event)
        for conn in recipients:
            conn.send(event.frame, event.wire)
        self.metrics.events_out.inc(len(recipients))

    def _recipients(self, event: Event) -> set[Connection]:
        recipients: set[Connection] = set()
        if event.room_id is not None:
            recipients.update(
                c for c in self.by_room.get(event.room_id, ()) if c.user_id != event.exclude_user
            )
        for user_id in event.user_ids:
            recipients.update(self.by_user.get(user_id, ()))
        return recipients

    def apply_remote(self, message: dict[str, Any]) -> None:
        """Act on what another process published through the relay."""
        kind = message["kind"]
        if kind == "event":
            self.deliver(
                Event.make(
                    message["payload"],
                    room_id=message["room_id"],
                    user_ids=tuple(message["user_ids"]),
                    seq=message["seq"],
                    exclude_user=message["exclude_user"],
                )
            )
        elif kind == "joined":
            self._joined_local(message["user_id"], message["room_id"], message["last_seq"])
        elif kind == "left":
            self._left_local(message["user_id"], message["room_id"])
        elif kind == "revoked":
            self._close_local(message["session_ids"])
        elif kind == "presence":
            user_id, status, rooms = message["user_id"], message["status"], message["rooms"]
            if self.presence.remote_change(message["node"], user_id, status, rooms):
                self._announce_presence(user_id, status, rooms)
        elif kind == "alive":
            users = {int(user): rooms for user, rooms in message["users"].items()}
            for user_id, rooms in self.presence.remote_alive(message["node"], users, time.time()):
                self._announce_presence(user_id, "online", rooms)

    # --- presence ------------------------------------------------------------------

    def local_presence(self) -> dict[str, list[int]]:
        """Users online on this process, with their rooms (the relay's `alive` message)."""
        return {
            str(user_id): sorted({r for c in conns for r in c.rooms})
            for user_id, conns in self.by_user.items()
            if user_id in self.presence.local
        }

    def relay_alive(self) -> None:
        """Redis is (back) up: tell the other processes who is online here."""
        if self.relay is not None:
            self.relay.send("alive", users=self.local_presence())

    def expire_remote(self, silent_since: float) -> None:
        for user_id, rooms in self.presence.expire(silent_since):
            self._announce_presence(user_id, "offline", rooms)

    def _announce_presence(self, user_id: int, status: str, rooms: Iterable[int]) -> None:
        """Tell everyone else connected here to one of `rooms` (the user's) about the user."""
        frame = dumps({"type": "presence", "user_id": user_id, "status": status})
        wire = text_frame(frame)
        recipients = {
            c for room_id in rooms for c in self.by_room.get(room_id, ()) if c.user_id != user_id
        }
        for conn in recipients:
            conn.send(frame, wire)

    def presence_of_roommates(self, conn: Connection, rooms: Iterable[int] | None = None) -> None:
        """Tell a connection which of its room-mates (in `rooms`, default all) are online."""
        rooms = list(conn.rooms if rooms is None else rooms)
        mates = {
            other.user_id
            for room_id in rooms
            for other in self.by_room.get(room_id, ())
            if other.user_id != conn.user_id
        }
        mates |= self.presence.remote_users_in(rooms) - {conn.user_id}
        for user_id in sorted(mates):
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


class Presence:
    """Who is online, here and (as the relay reports) on other processes.

    Each method returns whether the change is visible: a user online on two
    processes is online once, and offline only when the last one lets go.
    """

    def __init__(self) -> None:
        self.local: set[int] = set()
        self.remote: dict[str, dict[int, list[int]]] = {}  # node -> user -> rooms
        self.heard_from: dict[str, float] = {}

    def online_anywhere(self, user_id: int) -> bool:
        return user_id in self.local or any(user_id in users for users in self.remote.values())

    def local_online(self, user_id: int) -> bool:
        changed = not self.online_anywhere(user_id)
        self.local.add(user_id)
        return changed

    def local_offline(self, user_id: int) -> bool:
        self.local.discard(user_id)
        return not self.online_anywhere(user_id)

    def remote_change(self, node: str, user_id: int, status: str, rooms: list[int]) -> bool:
        self.heard_from[node] = time.time()
        was_online = self.online_anywhere(user_id)
        users = self.remote.setdefault(node, {})
        if status == "online":
            users[user_id] = rooms
        else:
            users.pop(user_id, None)
        return was_online != self.online_anywhere(user_id)

    def remote_alive(
        self, node: str, users: dict[int, list[int]], now: float
    ) -> list[tuple[int, list[int]]]:
        """A process's full list of online users; returns those newly online."""
        self.heard_from[node] = now
        appeared = [(u, r) for u, r in users.items() if not self.online_anywhere(u)]
        self.remote[node] = users
        return appeared

    def expire(self, silent_since: float) -> list[tuple[int, list[int]]]:
        """Forget processes not heard from since then; returns users now offline."""
        gone = []
        for node in [n for n, t in self.heard_from.items() if t < silent_since]:
            del self.heard_from[node]
            users = self.remote.pop(node, {})
            gone += [(u, r) for u, r in users.items() if not self.online_anywhere(u)]
        return gone

    def remote_users_in(self, rooms: Iterable[int]) -> set[int]:
        wanted = set(rooms)
        return {
            user_id
            for users in self.remote.values()
            for user_id, user_rooms in users.items()
            if wanted.intersection(user_rooms)
        }
