"""Web Push delivery, off the send path (API.md "Notifications").

A committed new message is handed over with `message_posted`, which only
queues it: a send never waits for a push, and never does a query for one.
A few dispatcher tasks decide whom each message notifies (members other than
the sender whose level and mute let it through, with no open WebSocket on
any process: `hub.presence`) and start one delivery per subscription:
encrypted for the browser (RFC 8291, aes128gcm, pywebpush), signed by the
server (RFC 8292 VAPID), POSTed through the guarded `Outbound` client. 2xx is
a success, 404/410 remove the subscription, 429/5xx and failed calls are
retried with back-off (3 attempts in all), other answers are counted and
dropped. Everything is bounded: the queue (full: dropped and counted), the
deliveries in flight and the retries waiting.

Edits never push: mentions an edit adds stay unpushed (they do count in the
room's `unread_mentions`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pywebpush
from aiohttp import web

from . import keys
from .models import Message, PushSubscription, User, now_ms
from .outbound import Outbound, OutboundError, OutboundRefused

if TYPE_CHECKING:
    from .db import Database, PushTarget
    from .observability import Metrics
    from .realtime.hub import Hub
    from .vapid import Vapid

log = logging.getLogger("chat_server.push")

QUEUE_LIMIT = 10_000  # messages and deliveries waiting
DISPATCHERS = 2
MAX_IN_FLIGHT = 32  # deliveries being sent at once
MAX_ATTEMPTS = 3
RETRY_DELAYS = (2.0, 10.0)  # seconds before the 2nd and the 3rd attempt
PREVIEW_CHARS = 200
PUSH_TTL = 12 * 3600  # seconds a push service keeps a push for an offline browser
# How long "some user has a subscription" is trusted before it is read again: a
# server where nobody subscribed spends no query on a message.
ANY_SUBSCRIPTION_TTL = 2.0


@dataclass(frozen=True)
class _NewMessage:
    message: Message


@dataclass(frozen=True)
class _Delivery:
    subscription: PushSubscription
    payload: bytes
    attempt: int = 1


class Pusher:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        outbound: Outbound,
        vapid: Vapid,
        metrics: Metrics,
        *,
        preview: bool,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.db = db
        self.hub = hub
        self.outbound = outbound
        self.vapid = vapid
        self.metrics = metrics
        self.preview = preview
        self.retry_delays = tuple(retry_delays)
        self._queue: asyncio.Queue[_NewMessage | _Delivery] = asyncio.Queue(QUEUE_LIMIT)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()  # dispatchers and deliveries
        self._retries: set[asyncio.TimerHandle] = set()
        self._any_subscription: tuple[bool, float] = (True, 0.0)  # (value, read at)
        self._busy = 0  # queued, dispatching, delivering or waiting to retry
        self._idle = asyncio.Event()
        self._idle.set()

    # --- the send path's side: never waits ---------------------------------------------

    def message_posted(self, message: Message) -> None:
        """A new message committed (not an edit, not a retried client_id): queue it,
        unless nobody has a subscription (as read lately): then it is decided now,
        without waking a dispatcher for every message."""
        known, read_at = self._any_subscription
        if not known and time.monotonic() - read_at <= ANY_SUBSCRIPTION_TTL:
            self.metrics.push_messages.inc()
            return
        self._enqueue(_NewMessage(message))

    def subscription_added(self) -> None:
        self._any_subscription = (True, time.monotonic())

    def _enqueue(self, item: _NewMessage | _Delivery) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.push_failures.labels("queue_full").inc()
            return
        self._begin()
        self.metrics.push_queue_depth.set(self._queue.qsize())

    # --- life -------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(DISPATCHERS):
            self._spawn(self._dispatch())

    async def close(self) -> None:
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drained(self) -> None:
        """Returns once nothing is queued, sent or waiting to be retried (for tests)."""
        await self._idle.wait()

    def _begin(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _end(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- deciding ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            self.metrics.push_queue_depth.set(self._queue.qsize())
            try:
                if isinstance(item, _Delivery):
                    await self._slots.acquire()
                    self._begin()
                    self._spawn(self._deliver(item))
                else:
                    try:
                        await self._notify(item.message)
                    finally:
                        self.metrics.push_messages.inc()
            except Exception:
                log.exception("push dispatch failed")
            finally:
                self._end()

    async def _notify(self, message: Message) -> None:
        if not await self._subscriptions_exist():
            return
        targets = await self.db.push_targets(
            message.room_id, message.sender_id, message.mentions, now_ms(), QUEUE_LIMIT
        )
        presence = self.hub.presence
        targets = [t for t in targets if not presence.online_anywhere(t.subscription.user_id)]
        if not targets:
            return
        sender = await self.db.get_user(message.sender_id)
        if sender is None:
            return
        for target in targets:
            self._enqueue(_Delivery(target.subscription, self._payload(message, sender, target)))

    async def _subscriptions_exist(self) -> bool:
        known, read_at = self._any_subscription
        if time.monotonic() - read_at > ANY_SUBSCRIPTION_TTL:
            known = await self.db.any_push_subscription()
            self._any_subscription = (known, time.monotonic())
        return known

    def _payload(self, message: Message, sender: User, target: PushTarget) -> bytes:
        body = message.body[:PREVIEW_CHARS] if self.preview else ""
        return json.dumps(
            {
                "type": "message",
                "room_id": message.room_id,
                "seq": message.seq,
                "room_name": "" if target.room_kind == "dm" else target.room_name,
                "sender": {"id": sender.id, "display_name": sender.display_name},
                "body": body,
            },
            ensure_ascii=False,
        ).encode()

    # --- delivering -------------------------------------------------------------------

    async def _deliver(self, delivery: _Delivery) -> None:
        try:
            await self._attempt(delivery)
        except Exception:
            log.exception("push delivery failed")
        finally:
            self._slots.release()
            self._end()

    async def _attempt(self, delivery: _Delivery) -> None:
        subscription = delivery.subscription
        body = await asyncio.get_running_loop().run_in_executor(
            None, _encrypt, subscription, delivery.payload
        )
        headers = {
            "TTL": str(PUSH_TTL),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": "normal",
            "Authorization": self.vapid.authorization(subscription.endpoint),
        }
        try:
            response = await self.outbound.post(
                subscription.endpoint, body, headers, https_only=True
            )
        except OutboundRefused:  # its host now leads somewhere refused
            self.metrics.push_failures.labels("refused").inc()
            return
        except OutboundError as exc:
            self._failed(delivery, exc.cause, retry=True)
            return
        status = response.status
        if 200 <= status < 300:
            self.metrics.pushes_sent.inc()
            await self.db.push_succeeded(subscription.id, now_ms())
        elif status in (404, 410):
            if await self.db.drop_push_subscription(subscription.id):
                self.metrics.push_subscriptions_removed.inc()
        elif status == 429 or status >= 500:
            self._failed(delivery, f"status_{status // 100}xx" if status >= 500 else "status_429")
        else:  # the push service refuses this push (bad VAPID, too large...): no retry
            self._failed(delivery, "rejected", retry=False)

    def _failed(self, delivery: _Delivery, cause: str, *, retry: bool = True) -> None:
        self.metrics.push_failures.labels(cause).inc()
        if not retry or delivery.attempt >= MAX_ATTEMPTS:
            return
        if len(self._retries) + self._queue.qsize() >= self._queue.maxsize:
            self.metrics.push_failures.labels("queue_full").inc()
            return
        delay = self.retry_delays[min(delivery.attempt, len(self.retry_delays)) - 1]
        again = _Delivery(delivery.subscription, delivery.payload, delivery.attempt + 1)
        self._begin()

        def retry_now() -> None:
            self._retries.discard(handle)
            self._enqueue(again)
            self._end()

        handle = asyncio.get_running_loop().call_later(delay, retry_now)
        self._retries.add(handle)


def _encrypt(subscription: PushSubscription, payload: bytes) -> bytes:
    """RFC 8291 aes128gcm for the subscription's keys (CPU work: run in an executor)."""
    info = {
        "endpoint": subscription.endpoint,
        "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
    }
    encoded = pywebpush.WebPusher(info).encode(payload, "aes128gcm")
    return bytes(encoded["body"])


async def push_service(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the app's Pusher (`app[keys.PUSHER]`), its tasks stopped on exit."""
    config = app[keys.CONFIG]
    pusher = Pusher(
        app[keys.DB],
        app[keys.HUB],
        app[keys.OUTBOUND],
        app[keys.VAPID],
        app[keys.METRICS],
        preview=config.push_preview,
    )
    app[keys.PUSHER] = pusher
    pusher.start()
    yield
    await pusher.close()
