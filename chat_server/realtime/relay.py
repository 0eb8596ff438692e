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
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import redis.asyncio as redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .hub import Hub
    from .observability import Metrics

log = logging.getLogger("chat_server.relay")


def channel_for(url: str) -> str:
    """The pub/sub channel of a deployment: pub/sub ignores Redis database numbers,
    so the database number of CHAT_REDIS_URL is put in the channel name. Separate
    deployments sharing one Redis use separate database numbers."""
    path = urlparse(url).path.strip("/")
    return f"chat_server:{path or '0'}:relay"


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
        self.hub: Hub | None = None
        self.metrics = metrics
        # Commands time out quickly; the subscriber waits for messages indefinitely
        # (a killed Redis closes the socket, which ends the wait at once).
        self.redis = redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.subscriber = redis.from_url(url, socket_connect_timeout=2, socket_keepalive=True)
        self.outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_LIMIT)
        self.connected = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, hub: Hub) -> None:
        self.hub = hub
        hub.relay = self
        self._tasks = [
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._alive_loop()),
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

    def send(self, kind: str, **fields: Any) -> None:
        """Queue a notification for the other processes (never waits)."""
        message = json.dumps({"node": self.node, "kind": kind, "ts": time.time(), **fields})
        try:
            self.outbox.put_nowait(message)
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

    async def _receive_loop(self) -> None:
        while True:
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._set_connected(True)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_message(message["data"])
            except (RedisError, OSError) as exc:
                log.warning(
                    "relay: redis unavailable (%s); polling the database", type(exc).__name__
                )
            await self._set_connected(False)
            await self._poll_until_reconnected()

    async def _set_connected(self, connected: bool) -> None:
        was, self.connected = self.connected, connected
        self.metrics.relay_connected.set(1 if connected else 0)
        if connected and not was:
            self.hub.relay_alive()
            await self.hub.poll()  # catch up on anything published while we were away

    async def _poll_until_reconnected(self) -> None:
        while not await self.ping():
            with contextlib.suppress(Exception):
                await self.hub.poll()
            await asyncio.sleep(RETRY_SECONDS)

    def _on_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if message.get("node") == self.node:
            return
        self.metrics.relay_received.inc()
        self.metrics.relay_lag.observe(max(0.0, time.time() - message.get("ts", time.time())))
        try:
            self.hub.apply_remote(message)
        except Exception:
            log.exception("relay: bad message of kind %r", message.get("kind"))

    async def _alive_loop(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_SECONDS)
            self.send("alive", users=self.hub.local_presence())
            self.hub.expire_remote(time.time() - ALIVE_EXPIRY)
