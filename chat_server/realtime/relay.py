"""Redis relay: several processes act as one server.

Each process publishes what its hub announces (committed events, membership
changes, revocations, presence) on one Redis channel and hands what other
processes publish to its hub for local delivery. Redis carries
notifications only; the database stays the truth. While Redis is away the
hub polls the database for rooms with local members (`Hub.poll`), and it
catches up once more when the relay is back, so nothing committed is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..events import Event, dumps

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
    kind: ClassVar[str] = "joined"
    user_id: int
    room_id: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Left:
    kind: ClassVar[str] = "left"
    user_id: int
    room_id: int


@dataclass(frozen=True, slots=True)
class Revoked:
    kind: ClassVar[str] = "revoked"
    session_ids: list[int]


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


RelayMessage = Published | Joined | Left | Revoked | PresenceChanged | Alive
_KINDS: dict[str, type[Joined | Left | Revoked | PresenceChanged | Alive]] = {
    cls.kind: cls for cls in (Joined, Left, Revoked, PresenceChanged, Alive)
}


def encode(node: str, message: RelayMessage, ts: float) -> str:
    header: dict[str, Any] = {"node": node, "kind": message.kind, "ts": ts}
    if isinstance(message, Published):
        event = message.event
        header |= {
            "room_id": event.room_id,
            "user_ids": event.user_ids,
            "seq": event.seq,
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
        return node, ts, Published(Event.relayed(frame, **header))
    return node, ts, _KINDS[kind](**header)


# Relay messages waiting to be published; beyond this they are dropped (the
# database is the truth, and polling catches receivers up).
OUTBOX_LIMIT = 10_000
# While Redis is unreachable: how often to retry, and to poll the database.
RETRY_SECONDS = 1.0
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
        self.outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_LIMIT)
        self.connected = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, hub: Hub) -> None:
        hub.relay = self
        self._tasks = [
            asyncio.create_task(self._receive_loop(hub)),
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._alive_loop(hub)),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.redis.aclose()
        await self.subscriber.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # --- sending -------------------------------------------------------------------

    def send(self, message: RelayMessage) -> None:
        """Queue a notification for the other processes (never waits)."""
        try:
            self.outbox.put_nowait(encode(self.node, message, time.time()))
        except asyncio.QueueFull:
            self.metrics.relay_dropped.inc()

    async def _publish_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            while True:
                try:
                    await self.redis.publish(self.channel, message)
                    self.metrics.relay_published.inc()
                    break
                except (RedisError, OSError):
                    if self.outbox.full():
                        self.metrics.relay_dropped.inc()
                        break  # drop the oldest; receivers catch up from the database
                    await asyncio.sleep(RETRY_SECONDS)

    # --- receiving -----------------------------------------------------------------

    async def _receive_loop(self, hub: Hub) -> None:
        while True:
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._set_connected(hub, True)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_message(hub, message["data"])
            except (RedisError, OSError) as exc:
                log.warning(
                    "relay: redis unavailable (%s); polling the database", type(exc).__name__
                )
            await self._set_connected(hub, False)
            await self._poll_until_reconnected(hub)

    async def _set_connected(self, hub: Hub, connected: bool) -> None:
        was, self.connected = self.connected, connected
        self.metrics.relay_connected.set(1 if connected else 0)
        if connected and not was:
            hub.relay_alive()
            await hub.poll()  # catch up on anything published while we were away

    async def _poll_until_reconnected(self, hub: Hub) -> None:
        while not await self.ping():
            with contextlib.suppress(Exception):
                await hub.poll()
            await asyncio.sleep(RETRY_SECONDS)

    def _on_message(self, hub: Hub, data: bytes) -> None:
        try:
            node, ts, message = decode(data)
        except (ValueError, KeyError, TypeError):
            log.warning("relay: undecodable message ignored")
            return
        if node == self.node:
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
