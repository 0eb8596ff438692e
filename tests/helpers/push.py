"""A real Web Push receiver for tests: a push service on 127.0.0.1 with browsers behind it.

It checks what a push service and a browser would: the VAPID JWT (RFC 8292:
ES256 signature against the server's public key from `GET /server`, audience
= this receiver's origin, expiry within 24 h, a `sub`), the headers, and
decrypts the payload (RFC 8291, aes128gcm) with the subscriber's own private
key and auth secret, generated here as a browser would. Each subscriber
answers as the test says: 201, 410, a hang, or any status.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SUBSCRIPTIONS = "/api/v1/push/subscriptions"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscriber:
    """One browser: its key pair and auth secret, and how its push service answers."""

    name: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))
    status: int = 201  # what the push service answers
    hang: bool = False  # never answer
    attempts: int = 0  # requests received, answered or not

    @property
    def subscription(self) -> dict[str, Any]:
        """The body of POST /push/subscriptions, as `PushSubscription.toJSON()` gives it."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth_secret)},
        }


@dataclass(frozen=True)
class Push:
    subscriber: str
    payload: dict[str, Any]
    headers: dict[str, str]


class PushReceiver:
    def __init__(self) -> None:
        self.origin = ""
        self.server_key: str | None = None  # the chat server's VAPID public key
        self.subscribers: dict[str, Subscriber] = {}
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        self.received: list[Push] = []
        self.errors: list[str] = []  # what a real push service or browser would refuse
        self.released = asyncio.Event()  # ends every hang

    def subscriber(self, name: str, **answer: Any) -> Subscriber:
        subscriber = Subscriber(name, f"{self.origin}/push/{name}", **answer)
        self.subscribers[name] = subscriber
        return subscriber

    async def next_push(self, timeout: float = 10.0) -> Push:
        return await asyncio.wait_for(self.pushes.get(), timeout)

    def pushes_to(self, name: str) -> list[dict[str, Any]]:
        return [p.payload for p in self.received if p.subscriber == name]

    async def _receive(self, request: web.Request) -> web.Response:
        subscriber = self.subscribers.get(request.match_info["name"])
        if subscriber is None:
            return web.Response(status=404)
        subscriber.attempts += 1
        if subscriber.hang:
            await self.released.wait()
            return web.Response(status=201)
        body = await request.read()
        try:
            payload = self._open(request, body, subscriber)
        except Exception as exc:  # recorded: the test fails on it
            self.errors.append(f"{subscriber.name}: {type(exc).__name__}: {exc}")
            return web.Response(status=400)
        if 200 <= subscriber.status < 300:
            push = Push(subscriber.name, payload, dict(request.headers))
            self.received.append(push)
            self.pushes.put_nowait(push)
        return web.Response(status=subscriber.status)

    def _open(self, request: web.Request, body: bytes, subscriber: Subscriber) -> dict[str, Any]:
        """The payload, after every check a push service and a browser make."""
        headers = request.headers
        assert headers["Content-Encoding"] == "aes128gcm", headers
        assert int(headers["TTL"]) > 0
        assert headers["Urgency"] in ("very-low", "low", "normal", "high")
        scheme, _, credentials = headers["Authorization"].partition(" ")
        assert scheme == "vapid", scheme
        parts = dict(item.strip().split("=", 1) for item in credentials.split(","))
        assert self.server_key is not None, "set server_key from GET /server first"
        assert parts["k"] == self.server_key, "k is not the server's public key"
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(parts["k"])
        )
        claims = jwt.decode(
            parts["t"],
            public_key,
            algorithms=["ES256"],
            audience=self.origin,
            options={"require": ["aud", "exp", "sub"]},
        )
        assert claims["exp"] <= time.time() + 24 * 3600, "a VAPID JWT lives at most 24 h"
        assert claims["sub"].startswith(("mailto:", "https:", "http:")), claims["sub"]
        plain = http_ece.decrypt(
            body,
            private_key=subscriber.private_key,
            auth_secret=subscriber.auth_secret,
            version="aes128gcm",
        )
        return json.loads(plain)


@asynccontextmanager
async def push_receiver() -> AsyncIterator[PushReceiver]:
    receiver = PushReceiver()
    app = web.Application()
    app.router.add_post("/push/{name}", receiver._receive)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.origin = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        receiver.released.set()
        await runner.cleanup()
    assert receiver.errors == [], receiver.errors
