"""Outgoing webhook deliveries: rows first, then signed attempts (DESIGN.md invariant 10).

Deliveries come from the room stream, not from the send path: each outgoing
hook keeps how far it has read its room (`webhooks.scanned_pos`), and a
worker turns the messages after that into `webhook_deliveries` rows and moves
the mark in one transaction under the hook's row lock (`Database.scan_webhook`).
So a send costs nothing more than a set lookup (`message_posted` wakes the
worker of the process that committed it), a message committed just before a
crash is still delivered (it is in the stream), and each message becomes one
delivery, whichever node scans.

A delivery is claimed by taking its lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL: exactly one node holds it), POSTed through the guarded client
(`outbound.py`: public addresses only unless CHAT_OUTBOUND_PRIVATE, 10 s
timeout, bounded answer) with `X-Chat-Event`, `X-Chat-Delivery` (the row's
UUID, the same on every attempt) and `X-Chat-Signature: sha256=<HMAC-SHA256 of
the body with the hook's secret>`, and retried after 1, 2, 4, 8 s
(`Config.webhook_backoff` times powers of two) up to MAX_ATTEMPTS, across
restarts and nodes. A delivery row holds the message's id, not its body: each
attempt is built from the message as it is then, so a retry carries an edit
made since, and a message deleted since is not sent at all (the delivery is
`skipped`; API.md "Room stream": nothing deleted is sent again with its old
body). The signature is over the exact bytes of each attempt.

A 2xx answer whose JSON has `text` or `body` is posted into the room as the
hook's bot, with a client_id made from the delivery's id: an answer repeated
by a retry after a crash is posted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import keys
from .errors import ApiError
from .events import dumps
from .messages import parse_send, post_message
from .models import Delivery, now_ms
from .outbound import OutboundError, OutboundRefused
from .waits import until_set

log = logging.getLogger("chat_server.webhooks")

# Attempts of one delivery before it is given up.
MAX_ATTEMPTS = 5
# How long an attempt may hold its delivery: the 10 s call, the reply and slack.
LEASE_MS = 60_000
# Longest sleep between looks for work made on other nodes (or due retries).
POLL_SECONDS = 2.0
# Messages one scan turns into deliveries (the rest at the next round).
SCAN_BATCH = 100
# Deliveries one process attempts at once (the outbound client bounds calls too).
MAX_IN_FLIGHT = 16


def signature(secret: str, body: bytes) -> str:
    """The X-Chat-Signature value: receivers recompute it over the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _body(delivery: Delivery) -> bytes:
    """What an attempt POSTs: built from the message as it is at this attempt."""
    message = delivery.message
    return dumps(
        {
            "type": "message.new",
            "room_id": message.room_id,
            "pos": message.pos,
            "message": message.to_json(),
            "webhook_id": delivery.webhook_id,
        }
    ).encode()


def _reply_of(body: bytes) -> str | None:
    """The `text` (or `body`) of a JSON answer, if it has one."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(answer, dict):
        return None
    reply = answer.get("text", answer.get("body"))
    return reply if isinstance(reply, str) and reply.strip() else None


class WebhookWorker:
    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._db = app[keys.DB]
        self._backoff = app[keys.CONFIG].webhook_backoff
        self._wake = asyncio.Event()
        self._rooms: set[int] = set()  # rooms with outgoing hooks, as of the last round
        self._in_flight: set[asyncio.Task[None]] = set()

    def message_posted(self, room_id: int) -> None:
        """A send committed on this process: look now if its room has outgoing hooks."""
        if room_id in self._rooms:
            self._wake.set()

    def hook_added(self, room_id: int) -> None:
        self._rooms.add(room_id)

    async def close(self) -> None:
        """Stops the attempts in flight (their leases expire; another round retries them)."""
        for attempt in list(self._in_flight):
            attempt.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            sleep = POLL_SECONDS
            try:
                sleep = await self.run_once()
            except Exception:  # the database away, say: try again at the next round
                log.exception("webhook deliveries failed; retrying in %.0f s", POLL_SECONDS)
            await until_set(self._wake, sleep)

    async def run_once(self) -> float:
        """Scans the hooks that are behind, starts the due deliveries; returns how
        long to sleep before the next round (unless woken)."""
        self._rooms = await self._db.outgoing_webhook_rooms()
        for webhook_id in await self._db.webhooks_behind():
            await self._db.scan_webhook(webhook_id, SCAN_BATCH)
        now = now_ms()
        due = await self._db.next_delivery_due()
        while due is not None and due <= now and len(self._in_flight) < MAX_IN_FLIGHT:
            delivery = await self._db.claim_delivery(now, LEASE_MS)
            if delivery is None:
                break
            task = asyncio.create_task(self._attempt(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
            due = await self._db.next_delivery_due()
        if due is None or len(self._in_flight) >= MAX_IN_FLIGHT:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.05, (due - now_ms()) / 1000))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free, or a retry is scheduled

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            error = await self._call(delivery)
            attempts = delivery.attempts + 1
            retry_at = None
            if error is not None and attempts < MAX_ATTEMPTS:
                retry_at = now_ms() + int(1000 * self._backoff * 2 ** (attempts - 1))
            if error is not None:
                log.info("delivery %s: attempt %d failed (%s)", delivery.id, attempts, error)
            if not await self._db.record_attempt(delivery, error, retry_at):
                log.warning("delivery %s: lease lost to another node", delivery.id)
        except asyncio.CancelledError:  # shutting down: leave it to the next round, at once
            await self._db.release_delivery(delivery)
            raise
        except Exception:
            log.exception("delivery %s failed", delivery.id)

    async def _call(self, delivery: Delivery) -> str | None:
        """One attempt; None when it succeeded, else what went wrong."""
        body = _body(delivery)
        headers = {
            "Content-Type": "application/json",
            "X-Chat-Event": "message.new",
            "X-Chat-Delivery": delivery.id,
            "X-Chat-Signature": signature(delivery.secret, body),
        }
        try:
            response = await self._app[keys.OUTBOUND].post(
                delivery.url, body, headers, https_only=False
            )
        except OutboundRefused as refused:
            return f"refused: {refused.reason}"
        except OutboundError as failed:
            return failed.cause
        if not 200 <= response.status < 300:
            return f"http {response.status}"
        reply = _reply_of(response.body)
        if reply is not None:
            await self._post_reply(delivery, reply)
        return None

    async def _post_reply(self, delivery: Delivery, reply: str) -> None:
        """The answer, as the bot, once: its client_id is the delivery's."""
        send = {"body": reply, "client_id": f"delivery:{delivery.id}"}
        try:
            await post_message(self._app, delivery.bot_id, parse_send(send, delivery.room_id))
        except ApiError as refused:  # too long, the bot removed, rate limited...
            log.info("delivery %s: reply not posted (%s)", delivery.id, refused.code)


async def webhook_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the process's delivery worker, from start-up to shutdown."""
    worker = app[keys.WEBHOOKS] = WebhookWorker(app)
    task = asyncio.create_task(worker.run(), name="webhooks")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close()
