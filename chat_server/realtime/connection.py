"""One WebSocket connection's delivery: its rooms, ordering, gap fill, backpressure.

Each connection remembers the last room-stream `pos` it delivered per room
it follows, drops duplicates, and fills a gap from the database before
delivering past it (DESIGN.md invariant 3); the catch-up after a join, the
end of the hold and polling use the same fill, and resume the same checks
over all its rooms read at once. A join notice may be stale (a poll looks
back): a room followed on one is filled by nothing before the notice's
check. Membership is part of the stream: delivering its own user's
`member.left` is where a connection stops following the room, so nothing
after a removal reaches it, whatever order notifications arrive in.

Fast path: while nothing is queued and the socket keeps up, a frame's
bytes, encoded once per event, are written straight to the transport.
Anything else goes through a bounded outbox of pre-encoded frames drained
by a writer task that exists only while there is work; a full outbox
closes the socket with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, web

from .. import events, stream
from ..db import Database
from ..errors import is_database_outage
from ..events import dumps, text_frame
from ..models import now_ms

if TYPE_CHECKING:
    from ..observability import Metrics

log = logging.getLogger("chat_server.connection")

# Largest replay a resume delivers per room; older missed events are named
# in a `gap` event for the client to page over REST (API.md "resume").
RESUME_REPLAY_LIMIT = 500
# Room events fetched per query while filling a gap.
FILL_PAGE = 100
# Room events a resume reads per round (rooms whose missed events add up to at
# most this are read together; a room at most RESUME_REPLAY_LIMIT): 300 rooms
# with a few events missed each replay from one read of the stream.
RESUME_BATCH_EVENTS = 2000
# Room events are stamped with the clock of the process that committed them:
# reading joins "since" an event's time looks back this much further.
JOIN_CLOCK_MARGIN_MS = 5_000
# How long a close may take before the transport is cut (a peer that stopped
# reading cannot receive the close frame either).
CLOSE_TIMEOUT = 2.0
# How long shutdown waits for outboxes to flush before closing regardless.
SHUTDOWN_FLUSH_TIMEOUT = 5.0
# Bytes a socket may have waiting in its transport before frames queue in the
# outbox instead (aiohttp's own high-water mark is 64 KiB).
WRITE_BUFFER_LIMIT = 64 * 1024


class State(enum.Enum):
    """Where a connection is in its life; each method says which states it acts in.

    CONNECTING -> HOLDING -> OPEN -> CLOSING -> CLOSED, and any -> CLOSED.
    """

    CONNECTING = enum.auto()  # indexed and following rooms; nothing written before `ready`
    HOLDING = enum.auto()  # `ready` sent; live room events held until the first frame after it
    OPEN = enum.auto()  # delivering everything
    CLOSING = enum.auto()  # a close is queued behind what was accepted; nothing more is
    CLOSED = enum.auto()  # closed, aborted or gone: nothing is written


# What the outbox holds: pre-encoded frames and these three instructions.


@dataclass(frozen=True, slots=True)
class Ordered:
    """A live room event, delivered in pos order.

    Without `wire` (an event each member sees differently) it is read from the
    stream, or from `shared` (a `room.updated`: one read for all connections);
    `removes` names the user a `member.left` removes.
    """

    room_id: int
    pos: int
    wire: bytes | None
    removes: int | None = None
    shared: stream.SharedRoomUpdate | None = None


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Deliver what the room's stream holds after the connection's position.

    After a join (`cause` "join") the room is announced first: `room.added`.
    """

    room_id: int
    cause: str  # for metrics: join, poll, hold


@dataclass(frozen=True, slots=True)
class Replay:
    """A resume: deliver what the rooms' streams hold after the connection's
    positions, at most RESUME_REPLAY_LIMIT events a room (a `gap` before), the
    rooms read together rather than one after another."""

    room_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


class TurnWrites:
    """The connections given frames in this turn of the event loop, each to write
    them in one system call at the end of the turn: one callback for all of them
    (a message to a room of 20 is one scheduled call, not 20)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[Connection] = []

    def add(self, conn: Connection) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._write_all)
        self._pending.append(conn)

    def _write_all(self) -> None:
        pending, self._pending = self._pending, []
        for conn in pending:
            try:
                conn.flush()
            except Exception:  # one socket's failure is not the others'
                log.exception("writing a connection's frames failed")


class Connection:
    """One authenticated WebSocket: the rooms it follows, its bounded outbox and its writer.

    The hub decides who receives what; the connection owns everything about
    its own delivery: which rooms it follows and from which pos (keeping the
    hub's room index `following` current), the hold after `ready`, resume,
    and how it closes.
    """

    __slots__ = (
        "closer",
        "db",
        "following",
        "held",
        "joining",
        "last_pos",
        "left_at",
        "metrics",
        "moved",
        "opened_at",
        "outbox",
        "outbox_limit",
        "rejoins",
        "request",
        "session_id",
        "state",
        "token_id",
        "transport",
        "turn_writes",
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
        session_id: int | None,
        token_id: int | None,
        db: Database,
        outbox_limit: int,
        metrics: Metrics,
        following: dict[int, set[Connection]],
        turn_writes: TurnWrites,
    ) -> None:
        self.ws = ws
        self.request = request
        # The socket's transport, kept: it never changes, and after the peer has
        # gone it says it is closing (request.transport, a property, says None).
        self.transport = request.transport
        self.user_id = user_id
        self.session_id = session_id  # the login it authenticated with, or
        self.token_id = token_id  # the personal access token
        self.db = db
        self.metrics = metrics
        self.outbox_limit = outbox_limit
        self.state = State.CONNECTING
        self.following = following  # the hub's index: room -> connections following it
        self.turn_writes = turn_writes
        self.opened_at = now_ms()
        self.last_pos: dict[int, int] = {}  # followed room -> last pos delivered
        # Room -> pos of the user's own `member.left` this connection delivered: a
        # join numbered before it (a late notification, a stale poll) is not followed.
        self.left_at: dict[int, int] | None = None
        # Room -> pos of a join heard of while still following the room: the user
        # left and came back, and this connection has yet to deliver the leaving.
        self.rejoins: dict[int, int] | None = None
        # Rooms followed on a join notice whose check (the `CatchUp` "join", see
        # _joining) has yet to run: the notice may be stale, and nothing queued
        # before it (a held room's catch-up, a live event's gap fill, a replay)
        # may fill the room from its position until the check has.
        # Each maps to the position the notice followed the room from.
        self.joining: dict[int, int] | None = None
        # Rooms whose position moved since `ready`: a later resume cannot rewind them.
        self.moved: set[int] | None = None
        self.outbox: deque[bytes | Ordered | CatchUp | Replay | Close] | None = None
        # Rooms with live room events held until the first frame after `ready`
        # is handled, so a resume's replay comes first (API.md). Only the room
        # is kept: release() catches up from the database, which bounds memory
        # however long the hold lasts.
        self.held: set[int] | None = None
        self.unflushed: list[bytes] | None = None  # frames for this turn's single write
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """Closing or closed: nothing more is accepted."""
        return self.state in (State.CLOSING, State.CLOSED)

    @property
    def rooms(self) -> list[int]:
        return sorted(self.last_pos)

    def follows(self, room_id: int) -> bool:
        return room_id in self.last_pos

    # --- rooms ---------------------------------------------------------------------

    def follow(self, room_id: int, after_pos: int, *, catch_up: str | None = None) -> bool:
        """Start delivering the room's events after `after_pos`; False if already following.

        `catch_up` (its cause) sends what was committed after `after_pos` at
        once (a join); otherwise the next live event or resume brings it.
        """
        last = self.last_pos.get(room_id)
        if last is not None:
            if after_pos >= last:  # a rejoin after a removal not yet delivered here
                if self.rejoins is None:
                    self.rejoins = {}
                self.rejoins[room_id] = max(self.rejoins.get(room_id, 0), after_pos + 1)
            return False
        if self.left_at is not None and self.left_at.get(room_id, -1) > after_pos:
            return False  # a join from before a removal already delivered here
        self.last_pos[room_id] = after_pos
        self.following.setdefault(room_id, set()).add(self)
        if catch_up == "join":
            if self.joining is None:
                self.joining = {}
            self.joining[room_id] = after_pos
        if catch_up is not None:
            self.push(CatchUp(room_id, catch_up))
        return True

    def advance_to(self, room_id: int, pos: int) -> None:
        """Nothing up to `pos` is owed (read for `ready`, after the room was followed)."""
        if self.last_pos.get(room_id, pos) < pos:
            self.last_pos[room_id] = pos

    def unfollow(self, room_id: int) -> bool:
        """Stop delivering the room (queued events of it are dropped); False if not following."""
        if self.last_pos.pop(room_id, None) is None:
            return False
        if self.joining is not None:
            self.joining.pop(room_id, None)
        conns = self.following.get(room_id)
        if conns is not None:
            conns.discard(self)
            if not conns:
                del self.following[room_id]
        return True

    def resume(self, seen: dict[int, int]) -> None:
        """Replay what the client missed (after its `seen` positions), then `resumed`.

        Before anything of a room was delivered, the position moves back to
        what the client has seen; afterwards it never rewinds (events would
        arrive out of order): the range missed is named in a `gap` instead.
        """
        replay = []
        for room_id, seen_pos in seen.items():
            last = self.last_pos.get(room_id)
            if last is None or seen_pos >= last:
                continue
            if self.moved is not None and room_id in self.moved:
                self.push(text_frame(events.gap(room_id, seen_pos + 1, last)))
                continue
            self.last_pos[room_id] = seen_pos
            replay.append(room_id)
        if replay:
            self.push(Replay(tuple(replay)))
        self.push(text_frame(events.resumed()))

    def behind(self, room_id: int, newest_pos: int) -> None:
        """The room's newest committed pos, read from the database: catch up if behind."""
        if self.last_pos.get(room_id, newest_pos) >= newest_pos:
            return
        if self.state in (State.CONNECTING, State.HOLDING):
            self._hold(room_id)  # after the resume's replay, as for live events
        else:
            self.push(CatchUp(room_id, "poll"))

    def _unchecked(self, room_id: int) -> bool:
        """Whether the room is followed on a join notice not checked yet: its
        `CatchUp` "join" is queued and brings everything; nothing else fills it."""
        return self.joining is not None and room_id in self.joining

    def _hold(self, room_id: int) -> None:
        if self.held is None:
            self.held = set()
        self.held.add(room_id)

    def _delivered(self, room_id: int, pos: int) -> None:
        """Called before the frame's write is awaited: a resume handled while the
        write waits on the socket must see the room as moved (and name a gap)
        rather than rewind a position the write is about to pass."""
        self.last_pos[room_id] = pos
        if self.moved is None:
            self.moved = set()
        self.moved.add(room_id)

    # --- life ----------------------------------------------------------------------

    def mark_ready(self) -> None:
        """`ready` has been sent: queued frames may follow (CONNECTING -> HOLDING)."""
        if self.state is State.CONNECTING:
            self.state = State.HOLDING
            self._wake_writer()

    def release(self) -> None:
        """End the hold (HOLDING -> OPEN): catch up on held rooms after any queued replay."""
        if self.state is not State.HOLDING:
            return
        self.state = State.OPEN
        held, self.held = self.held, None
        for room_id in sorted(held or ()):
            self.push(CatchUp(room_id, "hold"))

    async def flush_and_close(self, code: int, reason: str) -> None:
        """Close once what is queued (and what the hold kept back) has been sent;
        waits (bounded) for the writer to finish."""
        self.release()
        if self.state is State.OPEN:
            self.push(Close(code, reason))
            if self.state is State.OPEN:  # not aborted instead by a full outbox
                self.state = State.CLOSING
        if self.writer is not None:
            await asyncio.wait([self.writer], timeout=SHUTDOWN_FLUSH_TIMEOUT)

    async def shutdown(self, code: int, reason: str) -> None:
        """Flush (bounded) and close, cutting the writer short if it takes too long."""
        if self.state is State.CONNECTING:
            self.detach()  # nothing may be written before `ready`: just close
        else:
            await self.flush_and_close(code, reason)
        if self.writer is not None:
            self.writer.cancel()
        with contextlib.suppress(Exception):  # the peer may be gone already
            await self.ws.close(code=code)

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued."""
        if self.state is State.CLOSED:
            return
        self.detach()
        self.closer = asyncio.create_task(self._close(code, reason))

    def detach(self) -> None:
        """The socket is done with (closed, or its handler returned): write nothing more."""
        self.state = State.CLOSED
        self.outbox = None
        if self.writer is not None:
            self.writer.cancel()

    # --- delivery ------------------------------------------------------------------

    def send(self, wire: bytes) -> None:
        """Send an unordered frame (typing, presence, member and room events, replies)."""
        if not self._write_now(wire):
            self.push(wire)

    def deliver(self, item: Ordered) -> None:
        """A live room event: in order, after any gap is filled, unless held.

        The next event of a room goes straight out; anything else (a gap, an
        event to read from the stream, the user's own removal) goes through
        the writer.
        """
        if self.state in (State.CONNECTING, State.HOLDING):
            self._hold(item.room_id)
            return
        last = self.last_pos.get(item.room_id)
        if last is None or item.pos <= last:
            return  # not following the room, or a duplicate
        if (
            item.pos == last + 1
            and item.wire is not None
            and item.removes != self.user_id
            and self._write_now(item.wire)
        ):
            # _delivered, inline: this is the fan-out's per-recipient step
            room_id = item.room_id
            self.last_pos[room_id] = item.pos
            if self.moved is None:
                self.moved = {room_id}
            else:
                self.moved.add(room_id)
        else:
            self.push(item)

    def push(self, item: bytes | Ordered | CatchUp | Replay | Close) -> None:
        """Queue for the writer; a full outbox closes the connection (1013)."""
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

    def _write_now(self, wire: bytes) -> bool:
        """Write a pre-encoded frame now if nothing is queued and the socket keeps up.

        Frames written in one turn of the event loop leave in one system call
        (`flush` runs at the end of the turn, see TurnWrites): under load a
        socket gets one write for several messages, and a sender one for its
        echo and its ack.
        """
        if self.writer is not None or self.outbox or self.state not in _WRITABLE:
            return False
        transport = self.transport
        if (
            transport is None
            or transport.is_closing()
            or self.ws.closed
            or transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT
        ):
            return False
        if self.unflushed is None:
            self.unflushed = [wire]
            self.turn_writes.add(self)
        elif len(self.unflushed) < self.outbox_limit:
            self.unflushed.append(wire)
        else:
            return False
        return True

    def flush(self) -> None:
        """Write the frames accepted this turn, in one system call (TurnWrites
        calls it at the end of the turn)."""
        frames, self.unflushed = self.unflushed, None
        transport = self.transport
        if (
            frames
            and self.state is not State.CLOSED
            and not self.ws.closed
            and transport is not None
            and not transport.is_closing()
        ):
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _wake_writer(self) -> None:
        if self.writer is None and self.outbox and self.state in _WRITABLE:
            self.writer = asyncio.create_task(self._write_loop())

    async def _write(self, wire: bytes) -> None:
        """Write a pre-encoded frame, waiting while the transport's buffer is full."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            raise ConnectionResetError("the socket is closed")
        transport.write(wire)
        await self.request.writer.drain()

    async def _close(self, code: int, reason: str) -> None:
        self.flush()  # what this turn already accepted goes before the close frame
        self.state = State.CLOSED
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.transport is not None:
                self.transport.abort()

    async def _write_loop(self) -> None:
        try:
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, bytes):
                    await self._write(item)
                elif isinstance(item, Ordered):
                    await self._deliver(item)
                elif isinstance(item, CatchUp):
                    await self._catch_up(item)
                elif isinstance(item, Replay):
                    await self._replay(item)
                else:
                    await self._close(item.code, item.reason)
                    return
        except (ConnectionError, RuntimeError):
            self.state = State.CLOSED  # the peer went away; the reader side unregisters
        except Exception as exc:  # a gap fill could not read the database
            if is_database_outage(exc):
                log.warning("closing a connection: database unavailable during a fill")
                code = WSCloseCode.TRY_AGAIN_LATER
            else:
                log.exception("connection writer failed")
                code = WSCloseCode.INTERNAL_ERROR
            await self._close(code, "try again: reconnect and resume")
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox = None  # idle sockets keep no empty queue

    async def _deliver(self, item: Ordered) -> None:
        room_id = item.room_id
        last = self.last_pos.get(room_id)
        if last is None or item.pos <= last or self._unchecked(room_id):
            return  # not (or no longer) following the room, a duplicate, or its join's to bring
        if item.pos > last + 1:
            await self._fill(room_id, until=item.pos - 1, cause="gap")
        if self.last_pos.get(room_id) != item.pos - 1:
            return  # removed from the room meanwhile (or moved past it)
        if item.wire is None:
            wire = None if item.shared is None else await item.shared.frame_for(self.user_id)
            if wire is None or self.last_pos.get(room_id) != item.pos - 1:
                await self._fill(room_id, until=item.pos, cause="update")
                return
            self._delivered(room_id, item.pos)
            await self._write(wire)
            return
        self._delivered(room_id, item.pos)
        await self._write(item.wire)
        if item.removes == self.user_id:
            await self._removed(room_id, item.pos)
            if self.follows(room_id) and not self._unchecked(room_id):
                await self._fill(room_id, until=None, cause="join")

    async def _removed(self, room_id: int, pos: int) -> None:
        """The user's own `member.left` at `pos` was delivered: stop following the room,
        unless the user has joined it again since: then go on from the first
        `member.joined` after it (nothing between the two is theirs to see, but
        every membership from there on is, even one over again by now)."""
        left_at = await self.db.event_time(room_id, pos) or 0
        later = await self._joins_after(room_id, pos, left_at - JOIN_CLOCK_MARGIN_MS)
        # No join stamped since (a clock further behind than the margin): the current one.
        joined_pos = later[0] if later else await self.db.joined_pos(room_id, self.user_id) or 0
        if self.rejoins is not None:  # heard of while the database was being asked
            rejoined = self.rejoins.pop(room_id, 0)
            joined_pos = joined_pos or rejoined
        if joined_pos > pos:
            self.last_pos[room_id] = joined_pos - 1
            return
        self.unfollow(room_id)
        if self.left_at is None:
            self.left_at = {}
        self.left_at[room_id] = pos
        room = await self.db.get_room(room_id, self.user_id, include_deleted=True)
        if room is not None:
            await self._write(text_frame(events.room_removed(room)))

    async def _catch_up(self, item: CatchUp) -> None:
        last = self.last_pos.get(item.room_id)
        if last is None:
            return
        if item.cause == "join":
            notice = self.joining.pop(item.room_id, last) if self.joining is not None else last
            # A resume rewound the room after the notice: everything after the
            # client's position is owed, as in a replay; leavings and rejoins
            # on the way are the fill's to follow (_removed).
            if last >= notice and not await self._joining(item.room_id, last):
                return
        elif self._unchecked(item.room_id):
            return  # queued before a join notice that is still to be checked
        if item.room_id in self.last_pos:
            await self._fill(item.room_id, until=None, cause=item.cause)

    async def _replay(self, item: Replay) -> None:
        """Replay the rooms up to their newest pos as read here (what commits later
        arrives live, after this), room by room: a `gap` first for a room too far
        behind, then its events, read for many rooms at once (stream.read_ranges)."""
        self.metrics.stream_fills.labels("resume").inc()
        rooms = [r for r in item.room_ids if r in self.last_pos and not self._unchecked(r)]
        newest = await self.db.last_positions(rooms)
        ranges: list[tuple[int, int, int]] = []
        for room_id in rooms:
            last, top = self.last_pos[room_id], newest.get(room_id)
            if top is None or top <= last:
                self.metrics.resumes.labels("nothing_missed").inc()
                continue
            too_far = top - last > RESUME_REPLAY_LIMIT
            self.metrics.resumes.labels("gap" if too_far else "replayed").inc()
            ranges.append((room_id, top - RESUME_REPLAY_LIMIT if too_far else last, top))
        for batch in _batches(ranges, RESUME_BATCH_EVENTS):
            found = await stream.read_ranges(self.db, self.user_id, batch)
            for room_id, first, top in batch:
                from_pos = self.last_pos.get(room_id)
                if from_pos is None:
                    continue
                if from_pos < first:
                    self._delivered(room_id, first)
                    await self._write(text_frame(events.gap(room_id, from_pos + 1, first)))
                for event in found.get(room_id, ()):
                    if self.last_pos.get(room_id) != event.pos - 1:
                        break  # removed here, or moved on to a rejoin
                    self._delivered(room_id, event.pos)
                    await self._write(text_frame(dumps(event.payload)))
                    if event.removes == self.user_id:
                        await self._removed(room_id, event.pos)
                reached = self.last_pos.get(room_id)
                if reached is not None and reached < top and not self._unchecked(room_id):
                    # back in after a removal: read on
                    await self._fill(room_id, until=None, cause="resume")

    async def _joining(self, room_id: int, last: int) -> bool:
        """Announce a room followed after a join from `last`, as `room.added`; False
        when the notice came too late to matter (the room is no longer followed).

        Notices of joins can arrive late (a slow relay, a poll looking back),
        when the membership they began is over: one that began before this
        socket opened is skipped (had it lasted until then, `ready` would have
        followed it); the stream goes on from the first join since it opened
        (every membership from there on is the user's to see, one over by now
        included), else from the current membership.
        """
        joined_pos = await self.db.joined_pos(room_id, self.user_id)
        if joined_pos is None or joined_pos - 1 > last:  # the notice's membership is over
            start = await self._owed_join(room_id, last, joined_pos)
            if start is None:
                self.unfollow(room_id)
                return False
            self.last_pos[room_id] = start - 1
        elif self.rejoins is not None:
            self.rejoins.pop(room_id, None)
        if joined_pos is None:  # over again already: no `room.added`, its stream only
            return True
        room = await self.db.get_room(room_id, self.user_id)
        if room is not None:
            await self._write(text_frame(events.room_added(room)))
        return True

    async def _owed_join(self, room_id: int, last: int, joined_pos: int | None) -> int | None:
        """Where a room followed from `last` on a join notice goes on when the membership
        the notice began is over: the user's first join of it after `last` since this
        socket opened, else the current membership (`joined_pos`); None: nothing owed."""
        owed = await self._joins_after(room_id, last, self.opened_at)
        rejoined = self.rejoins.pop(room_id, None) if self.rejoins is not None else None
        if owed:
            return owed[0]
        if joined_pos is not None:
            return joined_pos
        if rejoined is not None and rejoined > last:  # committed after the read?
            joined_at = await self.db.event_time(room_id, rejoined)
            if joined_at is not None and joined_at >= self.opened_at:
                return rejoined
        return None

    async def _joins_after(self, room_id: int, pos: int, since_ms: int) -> list[int]:
        """The pos of the user's `member.joined` events in the room after `pos`,
        committed since `since_ms` (epoch ms), ascending."""
        joins = await self.db.joins_since([self.user_id], since_ms)
        return sorted(p for _, room, p in joins if room == room_id and p > pos)

    async def _fill(self, room_id: int, until: int | None, cause: str) -> int:
        """Send the room's committed events after our last pos, up to `until`, as they
        are now (stream.py); returns how many were sent."""
        self.metrics.stream_fills.labels(cause).inc()
        sent = 0
        while (
            (last := self.last_pos.get(room_id)) is not None
            and (until is None or last < until)
            and not self._unchecked(room_id)  # followed again meanwhile on a notice to check
        ):
            found, has_more = await stream.read_events(
                self.db,
                room_id,
                self.user_id,
                after_pos=last,
                before_pos=None if until is None else until + 1,
                limit=FILL_PAGE,
            )
            for event in found:
                if self.last_pos.get(room_id) != event.pos - 1:
                    break  # removed here, or moved on to a rejoin: read on from there
                self._delivered(room_id, event.pos)
                await self._write(text_frame(dumps(event.payload)))
                sent += 1
                if event.removes == self.user_id:
                    await self._removed(room_id, event.pos)
            else:
                if not has_more:
                    return sent
                continue
            if self.last_pos.get(room_id) == last:
                return sent  # nothing delivered from this page: the stream has nothing for us
        return sent


def _batches(ranges: list[tuple[int, int, int]], budget: int) -> list[list[tuple[int, int, int]]]:
    """`ranges` (room_id, after_pos, upto_pos) in order, grouped so that each group
    holds at most `budget` events (a larger range alone)."""
    batches: list[list[tuple[int, int, int]]] = []
    size = budget
    for wanted in ranges:
        count = wanted[2] - wanted[1]
        if size + count > budget:
            batches.append([])
            size = 0
        batches[-1].append(wanted)
        size += count
    return batches


# States in which frames are written (CLOSING: what was queued before the close).
_WRITABLE = (State.HOLDING, State.OPEN, State.CLOSING)
