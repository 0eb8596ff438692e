"""In-process fan-out of committed events to this process's WebSocket connections.

Publishing never awaits per recipient: an event is serialized and encoded
once, then handed to each recipient `Connection` (connection.py), which
enforces per-room order. The hub indexes connections by user and by room
(connections keep the room index current as they follow and leave rooms),
and exchanges events, joins, revocations and presence with other processes
through the relay. Removals need no message of their own: a connection
leaves a room when it delivers its user's `member.left`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from .. import events, stream
from ..db import Database
from ..events import Event, text_frame
from .connection import Connection, Ordered, TurnWrites
from .presence import Presence
from .relay import (
    Alive,
    Heartbeat,
    Joined,
    PresenceChanged,
    Published,
    RelayMessage,
    Revoked,
    RevokedTokens,
)

if TYPE_CHECKING:
    from ..observability import Metrics
    from .relay import Relay

log = logging.getLogger("chat_server.hub")

# Close code for a revoked session: a policy decision, not an error.
CLOSE_REVOKED = WSCloseCode.POLICY_VIOLATION


class Hub:
    """This process's connections, indexed by user and by room, and routing to them.

    `publish` delivers locally and hands the event to the relay (if any);
    `apply_remote` delivers what other processes published. Membership
    changes, revocations and presence travel the same way. What a
    connection delivers, and from which pos, is the connection's business.
    """

    def __init__(self, db: Database, outbox_limit: int, metrics: Metrics) -> None:
        self.db = db
        self.outbox_limit = outbox_limit
        self.metrics = metrics
        self.relay: Relay | None = None
        # A user has few connections: a list costs a quarter of a set per user.
        self.by_user: dict[int, list[Connection]] = {}
        self.by_room: dict[int, set[Connection]] = {}
        self.presence = Presence()
        self.turn_writes = TurnWrites()
        # Client IP -> sockets waiting for their `auth` frame (capped per IP by ws.py).
        self.unauthenticated: dict[str, int] = {}
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    def _relay(self, message: RelayMessage) -> None:
        if self.relay is not None:
            self.relay.send(message)

    # --- connections ---------------------------------------------------------------

    def connect(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        user_id: int,
        session_id: int | None,
        token_id: int | None = None,
    ) -> Connection:
        """Index a new connection before its rooms' positions are read, so nothing slips by.

        It authenticated with a login's session or a personal access token
        (`token_id`). It writes nothing until `ready` has been sent
        (`Connection.mark_ready`).
        """
        conn = Connection(
            ws,
            request,
            user_id,
            session_id,
            token_id,
            self.db,
            self.outbox_limit,
            self.metrics,
            self.by_room,
            self.turn_writes,
        )
        self.by_user.setdefault(user_id, []).append(conn)
        self.metrics.websockets_open.inc()
        return conn

    def set_rooms(self, conn: Connection, positions: dict[int, int]) -> None:
        """Start following the user's rooms after the given positions; announce them online.

        A room the connection follows already (a join while `ready` was being
        prepared) keeps its position.
        """
        for room_id, pos in positions.items():
            if not conn.follow(room_id, pos):
                conn.advance_to(room_id, pos)
        rooms = conn.rooms
        if self.presence.local_online(conn.user_id):
            self._announce_presence(conn.user_id, "online", rooms)
        self._relay(PresenceChanged(conn.user_id, "online", rooms))

    def disconnect(self, conn: Connection) -> None:
        if conn not in self.by_user.get(conn.user_id, ()):
            return
        conn.detach()
        self.metrics.websockets_open.dec()
        rooms = conn.rooms
        for room_id in rooms:
            conn.unfollow(room_id)
        others = self.by_user[conn.user_id]
        others.remove(conn)
        if others:
            return
        del self.by_user[conn.user_id]
        if self.presence.local_offline(conn.user_id):
            self._announce_presence(conn.user_id, "offline", rooms)
        self._relay(PresenceChanged(conn.user_id, "offline", rooms))

    async def poll(self, joins_since_ms: int) -> None:
        """Catch every local connection up from the database, and drop revoked ones.

        The relay calls this while Redis is away or stalled, and once it is
        back: what the relay could not carry is read from the truth instead.
        Each followed room's stream is read past the connection's position
        (which delivers a removal, and stops there), and the local users'
        joins since `joins_since_ms` (a little before Redis went away) are
        followed from their `member.joined`, even a membership over by now.
        """
        if self.by_room:
            newest = await self.db.last_positions(list(self.by_room))
            for room_id, last_pos in newest.items():
                for conn in list(self.by_room.get(room_id, ())):
                    conn.behind(room_id, last_pos)
        if self.by_user:
            joins = await self.db.joins_since(list(self.by_user), joins_since_ms)
            for user_id, room_id, joined_pos in sorted(joins, key=lambda join: join[1:]):
                self._joined_local(user_id, room_id, joined_pos)
        conns = [c for conns in self.by_user.values() for c in conns]
        sessions = {c.session_id for c in conns if c.session_id is not None}
        if sessions:
            self._close_local(await self.db.revoked_among(list(sessions)))
        tokens = {c.token_id for c in conns if c.token_id is not None}
        if tokens:
            self._close_local_tokens(await self.db.dead_tokens_among(list(tokens)))

    # --- membership and revocation -----------------------------------------------------

    def joined(self, user_id: int, room_id: int, pos: int) -> None:
        """The user's connections (on every process) follow the room from its
        `member.joined` at `pos`."""
        self._joined_local(user_id, room_id, pos)
        self._relay(Joined(user_id, room_id, pos))

    def _joined_local(self, user_id: int, room_id: int, pos: int) -> None:
        """Connections not following the room start at `pos`; the others are in it
        already, or will be once they deliver the removal this join follows
        (Connection._removed reads where the user rejoined)."""
        joining = [
            conn
            for conn in self.by_user.get(user_id, ())
            if conn.follow(room_id, pos - 1, catch_up="join")
        ]
        if not joining:
            return
        # New room-mates learn of each other's presence now, not at their next reconnect.
        if self.presence.online_anywhere(user_id):
            self._announce_presence(user_id, "online", [room_id])
        for conn in joining:
            self.presence_of_roommates(conn, [room_id])

    def close_sessions(self, session_ids: list[int]) -> None:
        """Close the open connections of revoked sessions at once, on every process."""
        self._close_local(session_ids)
        if session_ids:
            self._relay(Revoked(list(session_ids)))

    def _close_local(self, session_ids: list[int]) -> None:
        revoked = set(session_ids)
        for conns in list(self.by_user.values()):
            for conn in list(conns):
                if conn.session_id in revoked:
                    conn.abort(CLOSE_REVOKED, "session revoked")

    def close_tokens(self, token_ids: list[int]) -> None:
        """Close the open connections of revoked personal access tokens, on every process."""
        self._close_local_tokens(token_ids)
        if token_ids:
            self._relay(RevokedTokens(list(token_ids)))

    def _close_local_tokens(self, token_ids: list[int]) -> None:
        revoked = set(token_ids)
        for conns in list(self.by_user.values()):
            for conn in list(conns):
                if conn.token_id in revoked:
                    conn.abort(CLOSE_REVOKED, "token revoked")

    # --- events --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback(payload)` for every committed event; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, event: Event) -> None:
        """Deliver a committed event here and, through the relay, on every other process."""
        self.deliver(event)
        self._relay(Published(event))

    def deliver(self, event: Event) -> None:
        """Deliver an event to this process's connections and subscribers."""
        if self._subscribers:
            payload = event.as_object()
            for callback in list(self._subscribers):
                try:
                    callback(payload)
                except Exception:
                    log.exception("event subscriber failed")
        if event.pos is not None and event.room_id is not None:
            conns = self.by_room.get(event.room_id, ())
            item = self._ordered(event, conns)
            for conn in conns:
                conn.deliver(item)
            self.metrics.events_out.inc(len(conns))
            return
        recipients = self._recipients(event)
        for conn in recipients:
            conn.send(event.wire)
        self.metrics.events_out.inc(len(recipients))

    def _ordered(self, event: Event, conns: Iterable[Connection]) -> Ordered:
        """The room event as connections deliver it: its frame, or for a `room.updated`
        one read of the room as each of this process's followers sees it."""
        assert event.room_id is not None and event.pos is not None
        if not event.per_viewer:
            return Ordered(event.room_id, event.pos, event.wire, event.removes)
        shared = None
        if conns and event.as_object().get("type") == "room.updated":
            viewers = [conn.user_id for conn in conns]
            shared = stream.SharedRoomUpdate(self.db, event.room_id, event.pos, viewers)
        return Ordered(event.room_id, event.pos, None, event.removes, shared)

    def _recipients(self, event: Event) -> set[Connection]:
        recipients: set[Connection] = set()
        if event.room_id is not None:
            recipients.update(
                c for c in self.by_room.get(event.room_id, ()) if c.user_id != event.exclude_user
            )
        for user_id in event.user_ids:
            recipients.update(self.by_user.get(user_id, ()))
        return recipients

    def apply_remote(self, node: str, message: RelayMessage) -> None:
        """Act on what another process (`node`) published through the relay."""
        match message:
            case Published(event):
                self.deliver(event)
            case Joined(user_id, room_id, pos):
                self._joined_local(user_id, room_id, pos)
            case Heartbeat():
                pass  # another process's; the relay listens for its own
            case Revoked(session_ids):
                self._close_local(session_ids)
            case RevokedTokens(token_ids):
                self._close_local_tokens(token_ids)
            case PresenceChanged(user_id, status, rooms):
                if self.presence.remote_change(node, user_id, status, rooms):
                    self._announce_presence(user_id, status, rooms)
            case Alive(users):
                online = {int(user): rooms for user, rooms in users.items()}
                appeared, vanished = self.presence.remote_alive(node, online, time.time())
                for user_id, rooms in appeared:
                    self._announce_presence(user_id, "online", rooms)
                for user_id, rooms in vanished:
                    self._announce_presence(user_id, "offline", rooms)

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
        self._relay(Alive(self.local_presence()))

    def expire_remote(self, silent_since: float) -> None:
        for user_id, rooms in self.presence.expire(silent_since):
            self._announce_presence(user_id, "offline", rooms)

    def _announce_presence(self, user_id: int, status: str, rooms: Iterable[int]) -> None:
        """Tell everyone else connected here to one of `rooms` (the user's) about the user."""
        wire = text_frame(events.presence(user_id, status))
        recipients = {
            c for room_id in rooms for c in self.by_room.get(room_id, ()) if c.user_id != user_id
        }
        for conn in recipients:
            conn.send(wire)

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
            conn.push(text_frame(events.presence(user_id, "online")))

    async def shutdown(self) -> None:
        """Close every connection with 1001 after flushing what is queued (bounded)."""
        conns = [c for conns in self.by_user.values() for c in conns]
        await asyncio.gather(
            *(c.shutdown(WSCloseCode.GOING_AWAY, "server shutting down") for c in conns)
        )
