"""Typed keys for the state an application holds (`app[keys.DB]`, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import Config

if TYPE_CHECKING:
    from .auth import PasswordHasher, TokenService
    from .db import Database
    from .jobs import JobWorker
    from .media import MediaStore
    from .observability import Metrics
    from .outbound import Outbound
    from .pusher import Pusher
    from .ratelimit import RateLimiter
    from .realtime.hub import Hub
    from .realtime.relay import Relay
    from .registration import SetupLink
    from .vapid import Vapid
    from .webhooks import WebhookWorker

CONFIG: web.AppKey[Config] = web.AppKey("config")
DB: web.AppKey[Database] = web.AppKey("db")
TOKENS: web.AppKey[TokenService] = web.AppKey("tokens")
HASHER: web.AppKey[PasswordHasher] = web.AppKey("hasher")
AUTH_LIMITER: web.AppKey[RateLimiter] = web.AppKey("auth_limiter")
MESSAGE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("message_limiter")
# Incoming webhook calls, per client IP and per hook (integrations.py).
HOOK_LIMITER: web.AppKey[RateLimiter] = web.AppKey("hook_limiter")
HUB: web.AppKey[Hub] = web.AppKey("hub")
MEDIA: web.AppKey[MediaStore] = web.AppKey("media")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
RELAY: web.AppKey[Relay | None] = web.AppKey("relay")
JOBS: web.AppKey[JobWorker] = web.AppKey("jobs")
# The guarded HTTP client for push and webhooks (outbound.py).
OUTBOUND: web.AppKey[Outbound] = web.AppKey("outbound")
# The server's Web Push (VAPID) key pair, and the push queue (pusher.py).
VAPID: web.AppKey[Vapid] = web.AppKey("vapid")
PUSHER: web.AppKey[Pusher] = web.AppKey("pusher")
# Outgoing webhook deliveries (webhooks.py).
WEBHOOKS: web.AppKey[WebhookWorker] = web.AppKey("webhooks")
# The first admin's setup token as this node found it at start-up (registration.py).
SETUP: web.AppKey[SetupLink] = web.AppKey("setup")

# The authenticated user of a request, for the access log.
USER_ID: web.RequestKey[int] = web.RequestKey("user_id")
