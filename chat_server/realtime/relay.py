"""Redis relay: several processes act as one server.

Each process publishes what its hub announces (committed events, joins,
revocations, presence) on one Redis channel and hands what other processes
publish to its hub for local delivery. Redis carries notifications only;
the database stays the truth, and every room event is numbered in its
room's stream, so a notification lost, late or out of order is read back
from the database by the connection that notices the gap.

Each process publishes a heartbeat and listens for it on the channel: while
Redis is unreachable or has not echoed the heartbeat for STALL_SECONDS
(a stalled server keeps its sockets open and says nothing), the hub polls
the database for its connections' rooms and users (`Hub.poll`), and once
more when the relay is back, so delivery slows but nothing is lost
(DESIGN.md invariant 11). Notifications wait in an outbox bounded in bytes
that drops the oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..events import Event, dumps
from ..models import now_ms
from ..waits import until_set

if TYPE_CHECKING:
    from ..observability import Metrics
    from .hub import Hub

log = logging.getLogger("chat_server.relay")


def channel_for(url: str) -> str:
    """The pub/sub channel of a deployment: pub/sub ignores Redis database numbers,
    so the database number of CHAT_REDIS_URL is put in the channel name. Separate
    deployments sharing one Redis use separate database numbers."""
    path = urlparse(url).path.strip("/")
    return f"chat_server:{path or '0'}:relay"


# --- what travels between processes ----------------------------------------------------
# One dataclass per kind. On the channel a message is one line of JSON, its
# header (`node`, `kind`, `ts` and the fields); a `Published` event's frame
# follows the header's newline as the finished text, neither parsed nor
# serialized again on either side.


@dataclass(frozen=True, slots=True)
class Published:
    """A committed event for the other processes' connections and subscribers."""

    kind: ClassVar[str] = "event"
    event: Event


@dataclass(frozen=True, slots=True)
class Joined:
    """The user joined (or was added to) the room: its `member.joined` is at `pos`."""

    kind: ClassVar[str] = "joined"
    user_id: int
    room_id: int
    pos: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Published by each process for itself: hearing it back proves Redis is live."""

    kind: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Revoked:
    """Sessions ended (logout, password change, deactivation): close their sockets."""

    kind: ClassVar[str] = "revoked"
    session_ids: list[int]


@dataclass(frozen=True, slots=True)
class RevokedTokens:
    """Personal access tokens revoked (or their owner deactivated): close their sockets."""

    kind: ClassVar[str] = "revoked_tokens"
    token_ids: list[int]


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A user came online on (or left) the sending process."""

    kind: ClassVar[str] = "presence"
    user_id: int
    status: str
    rooms: list[int]


@dataclass(frozen=True, slots=True)
class Alive:
    """The sending process's whole list of online users, with their rooms."""

    kind: ClassVar[str] = "alive"
    users: dict[str, list[int]]


RelayMessage = Published | Joined | Heartbeat | Revoked | RevokedTokens | PresenceChanged | Alive
_Plain = Joined | Heartbeat | Revoked | RevokedTokens | PresenceChanged | Alive
_KINDS: dict[str, type[_Plain]] = {
    cls.kind: cls for cls in (Joined, Heartbeat, Revoked, RevokedTokens, PresenceChanged, Alive)
}


def encode(node: str, message: RelayMessage, ts: float) -> str:
    header: dict[str, Any] = {"node": node, "kind": message.kind, "ts": ts}
    if isinstance(message, Published):
        event = message.event
        header |= {
            "room_id": event.room_id,
            "user_ids": event.user_ids,
            "pos": event.pos,
            "removes": event.removes,
            "per_viewer": event.per_viewer,
            "exclude_user": event.exclude_user,
        }
        return dumps(header) + "\n" + event.frame
    return dumps(header | {f.name: getattr(message, f.name) for f in dataclasses.fields(message)})


def decode(data: bytes) -> tuple[str, float, RelayMessage]:
    """(sending node, time sent, message); raises ValueError, KeyError or TypeError if bad."""
    header_text, _, frame = data.decode().partition("\n")
    header = json.loads(header_text)
    node, kind, ts = header.pop("node"), header.pop("kind"), header.pop("ts")
    if kind == Published.kind:
        header["user_ids"] = tuple(header["user_ids"])
        return node, ts, Published(Event.relayed(frame, **header))
    return node, ts, _KINDS[kind](**header)


# Bytes of relay messages waiting to be published; beyond this the oldest are
# dropped (the database is the truth: receivers read what they miss from it).
OUTBOX_BYTES = 8 * 1024 * 1024
# How long one publish may take before Redis counts as away for this message.
PUBLISH_TIMEOUT = 1.0
# While Redis is unreachable: how often to retry connecting.
RETRY_SECONDS = 1.0
# Each process's heartbeat period, and how long its echo may be missing
# before Redis counts as stalled and the process polls the database instead
# (and how often it polls meanwhile).
HEARTBEAT_SECONDS = 0.25
STALL_SECONDS = 1.0
POLL_SECONDS = 0.5
# How long start-up waits for Redis to carry the first heartbeat (then it
# starts anyway, polling until Redis is back).
START_WAIT_SECONDS = 2.0
# While Redis does not carry events, polls look for joins committed since a
# little before Redis was last known to carry them (commits take time, and
# clocks of several machines differ a little).
JOINS_MARGIN_MS = 5_000
# How often a process announces who is online on it, and after how long a
# silent process's users are considered gone (it crashed or lost Redis).
ALIVE_SECONDS = 10.0
ALIVE_EXPIRY = 3 * ALIVE_SECONDS


class Relay:
    def __init__(self, url: str, metrics: Metrics) -> None:
        self.node = secrets.token_hex(6)
        self.channel = channel_for(url)
        self.metrics = metrics
        # Commands time out quickly; the subscriber waits for messages indefinitely
        # (a killed Redis closes the socket, which ends the wait at once).
        self.redis = redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.subscriber = redis.from_url(url, socket_connect_timeout=2, socket_keepalive=True)
        self.outbox: deque[str] = deque()
        self.outbox_bytes = 0
        self._queued = asyncio.Event()
        self.subscribed = False  # the subscriber is listening on the channel
        self.heard_at = 0.0  # monotonic time our own heartbeat last came back
        self.heard_at_ms = now_ms()  # the same, on the wall clock (joins are stamped so)
        self.connected = False  # subscribed and hearing our heartbeat: Redis carries events
        self._live = asyncio.Event()  # set while connected
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, hub: Hub) -> None:
        hub.relay = self
        self._tasks = [
            asyncio.create_task(self._receive_loop(hub)),
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._watch_loop(hub)),
            asyncio.create_task(self._alive_loop(hub)),
        ]
        await until_set(self._live, START_WAIT_SECONDS)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.redis.aclose()
        await self.subscriber.aclose()

    # --- sending -------------------------------------------------------------------

    def send(self, message: RelayMessage) -> None:
        """Queue a notification for the other processes (never waits).

        Past OUTBOX_BYTES the oldest queued notifications are dropped: each is
        recoverable (room events from the stream, joins and revocations by
        polling), and the newest say most about the present.
        """
        text = encode(self.node, message, time.time())
        self.outbox.append(text)
        self.outbox_bytes += len(text)
        while self.outbox_bytes > OUTBOX_BYTES and len(self.outbox) > 1:
            self.outbox_bytes -= len(self.outbox.popleft())
            self.metrics.relay_dropped.inc()
        self.metrics.relay_bytes_queued.set(self.outbox_bytes)
        self._queued.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self.outbox:
                message = self.outbox[0]
                try:  # not wait_for, which can swallow a cancel (see waits.until_set)
                    async with asyncio.timeout(PUBLISH_TIMEOUT):
                        await self.redis.publish(self.channel, message)
                except (RedisError, OSError, TimeoutError):
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                if self.outbox and self.outbox[0] is message:  # not dropped meanwhile
                    self.outbox.popleft()
                    self.outbox_bytes -= len(message)
                    self.metrics.relay_bytes_queued.set(self.outbox_bytes)
                self.metrics.relay_published.inc()

    # --- receiving -----------------------------------------------------------------

    async def _receive_loop(self, hub: Hub) -> None:
        while True:
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.subscribed = True
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_message(hub, message["data"])
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning(
                        "relay: redis unavailable (%s); polling the database", type(exc).__name__
                    )
            self.subscribed = False
            await asyncio.sleep(RETRY_SECONDS)

    async def _watch_loop(self, hub: Hub) -> None:
        """Heartbeat, stall detection and, while Redis does not carry events, polling."""
        beat: asyncio.Task[None] | None = None
        last_poll = 0.0
        while True:
            if beat is None or beat.done():
                beat = asyncio.create_task(self._beat())
            now = time.monotonic()
            healthy = self.subscribed and now - self.heard_at <= STALL_SECONDS
            if healthy and not self.connected:
                since = self.heard_at_ms - JOINS_MARGIN_MS
                self._set_connected(True)
                await self._poll(hub, since)  # catch up on what was published while away
                hub.relay_alive()
            elif not healthy and self.connected:
                self._set_connected(False)
                if self.subscribed:  # connected but silent: a stall, not an outage
                    log.warning("relay: redis stopped answering; polling the database")
                    self.metrics.relay_stalls.inc()
            if not self.connected and now - last_poll >= POLL_SECONDS:
                last_poll = now
                await self._poll(hub, self.heard_at_ms - JOINS_MARGIN_MS)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _beat(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(STALL_SECONDS):  # not wait_for: see waits.until_set
                await self.redis.publish(self.channel, encode(self.node, Heartbeat(), time.time()))

    @staticmethod
    async def _poll(hub: Hub, joins_since_ms: int) -> None:
        try:
            await hub.poll(joins_since_ms)
        except Exception as exc:  # the database may be away too; try again next round
            log.warning("relay: polling the database failed (%s)", type(exc).__name__)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self._live.set()
        else:
            self._live.clear()
        self.metrics.relay_connected.set(1 if connected else 0)

    def _on_message(self, hub: Hub, data: bytes) -> None:
        try:
            node, ts, message = decode(data)
        except (ValueError, KeyError, TypeError):
            log.warning("relay: undecodable message ignored")
            return
        if node == self.node:
            if isinstance(message, Heartbeat) and self.connected:
                self.heard_at = time.monotonic()
                self.heard_at_ms = now_ms()
            elif isinstance(message, Heartbeat):
                self.heard_at = time.monotonic()  # back: heard_at_ms stays where Redis went away
            return
        self.metrics.relay_received.inc()
        self.metrics.relay_lag.observe(max(0.0, time.time() - ts))
        try:
            hub.apply_remote(node, message)
        except Exception:
            log.exception("relay: failed to apply a message of kind %r", message.kind)

    async def _alive_loop(self, hub: Hub) -> None:
        while True:
            await asyncio.sleep(ALIVE_SECONDS)
            self.send(Alive(hub.local_presence()))
            hub.expire_remote(time.time() - ALIVE_EXPIRY)
