"""`create_app(config)`: the one factory behind run.py, the tests and embedders."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from . import (
    admin,
    auth,
    conversation,
    integrations,
    jobs,
    keys,
    media,
    messages,
    moderation,
    notify,
    observability,
    outbound,
    push,
    pusher,
    registration,
    rooms,
    tokens,
    users,
    vapid,
    webhooks,
)
from .config import Config
from .db import Database
from .errors import NotFound, Unauthorized, Unavailable
from .observability import Metrics
from .ratelimit import make_limiter
from .realtime import ws
from .realtime.hub import Hub
from .realtime.relay import Relay
from .validation import MAX_JSON_BYTES

WEB_DIR = Path(__file__).resolve().parent / "web"
# The web client's page may load only our own scripts, styles and images.
WEB_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(config: Config | None = None) -> web.Application:
    config = config or Config.from_env()
    # CORS (outermost, so error responses carry its headers too) only when
    # origins are allowed: a WebSocket keeps its middleware frames for life.
    middlewares = [observability.observe]
    if config.allowed_origins:
        middlewares.insert(0, cors)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_JSON_BYTES,
        # Whatever runs the app, requests aiohttp cannot parse are logged safely.
        handler_args={"logger": observability.PROTOCOL_LOG},
    )
    app[keys.CONFIG] = config
    app[keys.METRICS] = Metrics()
    app[keys.TOKENS] = auth.TokenService(
        auth.load_secret_key(config), config.access_ttl, config.refresh_ttl
    )
    app[keys.VAPID] = vapid.Vapid(vapid.load_private_key(config), config.resolved_public_url)
    relay = Relay(config.redis_url, app[keys.METRICS]) if config.redis_url else None
    app[keys.RELAY] = relay
    shared = relay.redis if relay else None  # limits are per cluster when Redis is configured
    app[keys.AUTH_LIMITER] = make_limiter(config.auth_rate, shared, "auth")
    app[keys.MESSAGE_LIMITER] = make_limiter(config.message_rate, shared, "messages")
    # An incoming hook posts at most as fast as a user may (and per client IP too).
    app[keys.HOOK_LIMITER] = make_limiter(config.message_rate, shared, "hooks")
    app.cleanup_ctx.append(_password_hasher)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(registration.setup_token)
    app.cleanup_ctx.append(_hub)
    app.cleanup_ctx.append(media.media_store)
    app.cleanup_ctx.append(jobs.job_worker)
    app.cleanup_ctx.append(outbound.outbound_client)
    app.cleanup_ctx.append(pusher.push_service)
    app.cleanup_ctx.append(webhooks.webhook_worker)
    app.on_shutdown.append(_close_websockets)
    _add_routes(app)
    return app


async def _password_hasher(app: web.Application) -> AsyncIterator[None]:
    app[keys.HASHER] = auth.PasswordHasher(app[keys.CONFIG].bcrypt_rounds)
    yield
    app[keys.HASHER].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app[keys.DB] = await Database.open(config.resolved_database_url)
    yield
    await app[keys.DB].close()


async def _hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[keys.HUB] = Hub(app[keys.DB], app[keys.CONFIG].ws_outbox_limit, app[keys.METRICS])
    relay = app[keys.RELAY]
    if relay is not None:
        await relay.start(hub)
    yield
    if relay is not None:
        await relay.close()


async def _close_websockets(app: web.Application) -> None:
    """On shutdown, flush each connection's queue and close it with 1001."""
    await app[keys.HUB].shutdown()


def _add_routes(app: web.Application) -> None:
    api = "/api/v1"
    reaction = f"{api}/rooms/{{room_id}}/messages/{{message_id}}/reactions/{{emoji}}"
    # Ids next to fixed siblings (/users/me, /rooms/public) are digits only, so an
    # unsupported method on a sibling is 405, not a lookup of id "public".
    app.router.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get(f"{api}/openapi.json", openapi_document),
            web.get(f"{api}/asyncapi.json", asyncapi_document),
            web.post(f"{api}/auth/signup", auth.signup),
            web.post(f"{api}/auth/login", auth.login),
            web.post(f"{api}/auth/refresh", auth.refresh),
            web.post(f"{api}/auth/logout", auth.logout),
            web.get(f"{api}/auth/sessions", auth.list_sessions),
            web.delete(f"{api}/auth/sessions/{{session_id}}", auth.delete_session),
            web.post(f"{api}/auth/password", auth.change_password),
            web.post(f"{api}/auth/tokens", tokens.create_token),
            web.get(f"{api}/auth/tokens", tokens.list_tokens),
            web.delete(f"{api}/auth/tokens/{{token_id}}", tokens.revoke_token),
            web.get(f"{api}/server", registration.server_info),
            web.post(f"{api}/invites", registration.create_invite),
            web.get(f"{api}/invites", registration.list_invites),
            web.get(f"{api}/invites/{{invite}}", registration.check_invite),
            web.delete(f"{api}/invites/{{invite}}", registration.revoke_invite),
            web.get(f"{api}/users/me", users.get_me),
            web.patch(f"{api}/users/me", users.patch_me),
            web.get(f"{api}/users/me/mentions", messages.my_mentions),
            web.get(f"{api}/users/{{user_id:[0-9]+}}", users.get_user),
            web.get(f"{api}/users", users.search_users),
            web.post(f"{api}/rooms", rooms.create_room),
            web.get(f"{api}/rooms", rooms.list_rooms),
            web.get(f"{api}/rooms/public", rooms.public_rooms),
            web.get(f"{api}/rooms/{{room_id:[0-9]+}}", rooms.get_room),
            web.patch(f"{api}/rooms/{{room_id:[0-9]+}}", rooms.patch_room),
            web.delete(f"{api}/rooms/{{room_id:[0-9]+}}", moderation.delete_room),
            web.put(f"{api}/rooms/{{room_id}}/notify", notify.put_notify),
            web.post(f"{api}/rooms/{{room_id}}/join", rooms.join_room),
            web.post(f"{api}/rooms/{{room_id}}/leave", rooms.leave_room),
            web.get(f"{api}/rooms/{{room_id}}/events", rooms.room_events),
            web.get(f"{api}/rooms/{{room_id}}/members", rooms.list_members),
            web.post(f"{api}/rooms/{{room_id}}/members", rooms.add_member),
            web.delete(f"{api}/rooms/{{room_id}}/members/{{user_id}}", rooms.kick_member),
            web.patch(f"{api}/rooms/{{room_id}}/members/{{user_id}}", rooms.set_member_role),
            web.post(f"{api}/rooms/{{room_id}}/bans", moderation.ban_user),
            web.get(f"{api}/rooms/{{room_id}}/bans", moderation.list_bans),
            web.delete(f"{api}/rooms/{{room_id}}/bans/{{user_id}}", moderation.unban_user),
            web.post(f"{api}/dm", rooms.open_dm),
            web.post(f"{api}/bots", integrations.create_bot),
            web.get(f"{api}/bots", integrations.list_bots),
            web.delete(f"{api}/bots/{{bot_id}}", integrations.delete_bot),
            web.post(f"{api}/rooms/{{room_id}}/webhooks", integrations.create_webhook),
            web.get(f"{api}/rooms/{{room_id}}/webhooks", integrations.list_webhooks),
            web.delete(
                f"{api}/rooms/{{room_id}}/webhooks/{{webhook_id}}", integrations.delete_webhook
            ),
            web.post(f"{api}/hooks/{{secret}}", integrations.incoming_hook),
            web.post(f"{api}/rooms/{{room_id}}/messages", messages.send_message),
            web.get(f"{api}/rooms/{{room_id}}/messages", messages.history),
            web.patch(f"{api}/rooms/{{room_id}}/messages/{{message_id}}", messages.edit_message),
            web.delete(f"{api}/rooms/{{room_id}}/messages/{{message_id}}", messages.delete_message),
            web.get(f"{api}/rooms/{{room_id}}/messages/{{message_id}}/thread", messages.thread),
            web.post(
                f"{api}/rooms/{{room_id}}/messages/{{message_id}}/report",
                moderation.report_message,
            ),
            web.post(f"{api}/rooms/{{room_id}}/read", messages.read_marker),
            web.put(reaction, conversation.put_reaction),
            web.delete(reaction, conversation.delete_reaction),
            web.get(reaction, conversation.list_reactors),
            web.post(f"{api}/rooms/{{room_id}}/pins", conversation.pin_message),
            web.get(f"{api}/rooms/{{room_id}}/pins", conversation.list_pins),
            web.delete(f"{api}/rooms/{{room_id}}/pins/{{message_id}}", conversation.unpin_message),
            web.get(f"{api}/push/subscriptions", push.list_subscriptions),
            web.post(f"{api}/push/subscriptions", push.create_subscription),
            web.delete(f"{api}/push/subscriptions/{{subscription_id}}", push.delete_subscription),
            web.get(f"{api}/search", messages.search),
            web.post(f"{api}/media", media.upload),
            web.get(f"{api}/media/{{media_id}}", media.download),
            web.get(f"{api}/media/{{media_id}}/thumbnail", media.thumbnail),
            web.get(f"{api}/admin/users", admin.list_users),
            web.post(f"{api}/admin/users", admin.create_user),
            web.patch(f"{api}/admin/users/{{user_id}}", admin.patch_user),
            web.post(f"{api}/admin/users/{{user_id}}/erase", admin.erase_user),
            web.get(f"{api}/admin/audit", admin.audit_log),
            web.get(f"{api}/admin/reports", moderation.list_reports),
            web.patch(f"{api}/admin/reports/{{report_id}}", moderation.decide_report),
            web.get(f"{api}/ws", ws.websocket),
            web.get("/", web_client),
            web.get("/sw.js", service_worker),
        ]
    )
    if app[keys.CONFIG].metrics:
        app.router.add_get("/metrics", metrics)
    app.router.add_static("/web", WEB_DIR, name="web")


# --- CORS ------------------------------------------------------------------------------

# What browsers on an allowed origin (CHAT_ALLOWED_ORIGINS) may send and read.
CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match, Range, X-Request-ID"
CORS_EXPOSE_HEADERS = "Retry-After, X-Request-ID, ETag, Content-Range, Content-Disposition"
CORS_MAX_AGE = "600"


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the origins in CHAT_ALLOWED_ORIGINS; others get no CORS headers at all.

    (Installed only when CHAT_ALLOWED_ORIGINS is set.)

    Tokens travel in the Authorization header, never in cookies, so credentials
    are not allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin.rstrip("/") not in request.app[keys.CONFIG].allowed_origins:
        return await handler(request)
    cors_headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers=cors_headers
            | {
                "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
            },
        )
    response = await handler(request)
    if not response.prepared:
        response.headers.update(cors_headers)
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    return response


# --- operations ----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    db = request.app[keys.DB]
    try:
        await db.ping()
    except Exception as exc:
        raise Unavailable(f"database: {type(exc).__name__}") from None
    if db.engine.storage_full():
        raise Unavailable("database storage full: writes fail")
    relay = request.app[keys.RELAY]
    if relay is not None and not relay.connected:  # unreachable, or stalled (no heartbeat)
        raise Unavailable("redis unreachable")
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics; with CHAT_METRICS_TOKEN set, only for its Bearer token."""
    expected = request.app[keys.CONFIG].metrics_token
    if expected is not None:
        given = auth.bearer_token(request) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("metrics need the CHAT_METRICS_TOKEN as a Bearer token")
    return await observability.metrics_endpoint(request)


def _load_openapi() -> bytes:
    return resources.files("chat_server").joinpath("openapi.json").read_bytes()


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_load_openapi(), content_type="application/json")


async def asyncapi_document(request: web.Request) -> web.Response:
    """The AsyncAPI 3.0 description of the WebSocket's frames."""
    body = resources.files("chat_server").joinpath("asyncapi.json").read_bytes()
    return web.Response(body=body, content_type="application/json")


async def web_client(request: web.Request) -> web.FileResponse:
    """The built-in web client, at the site root only: its pages load /web/ and
    /api/v1 from the root, so an app mounted under a prefix serves the API alone."""
    if request.path != "/":
        raise NotFound("the built-in web client is served only at the site root")
    return web.FileResponse(
        WEB_DIR / "index.html",
        headers={"Content-Security-Policy": WEB_CSP, "X-Content-Type-Options": "nosniff"},
    )


async def service_worker(request: web.Request) -> web.FileResponse:
    """The web client's service worker, served from the root: a worker controls at most
    the pages under its own path, and it must cover the whole app."""
    return web.FileResponse(
        WEB_DIR / "sw.js",
        headers={
            # As documented, whatever the system's MIME table says (`application/javascript`).
            "Content-Type": "text/javascript; charset=utf-8",
            "Content-Security-Policy": WEB_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI document's paths (used by tests and tooling)."""
    return json.loads(_load_openapi())["paths"]
