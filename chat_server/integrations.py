"""Bot accounts and webhooks: `/bots`, `/rooms/{id}/webhooks` and the incoming
hook `/hooks/{secret}` (API.md "Bots and integrations").

A bot is an account with `is_bot` and an owner; it has no password and acts
through its personal access tokens. A webhook has a bot of its own, owned by
its creator and added to the room as a member. An incoming hook posts as that
bot through the one send path (`messages.post_message`: validation, the
message rate, membership); outgoing deliveries are webhooks.py's.

The incoming hook is found by the SHA-256 of the secret in its URL (a unique
index), then compared with `hmac.compare_digest`: the lookup's time does not
depend on how much of a guessed secret is right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from . import keys
from .admin import announce_deactivation
from .auth import USERNAME, USERNAME_RULE, client_ip, require_auth, username_taken
from .config import Config
from .db import MANAGERS, LimitReached, NotAllowed, RoomGone, WebhookFields
from .engines import UniqueViolation
from .errors import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited
from .messages import parse_send, post_message
from .models import Actor
from .outbound import OutboundRefused
from .paging import decode_cursor, page, page_limit
from .rooms import announce_join, member_room, moderated_room, visible_room
from .tokens import new_token
from .validation import Validator, path_id, read_json

# Bots one account may own (besides its webhooks' bots).
MAX_BOTS_PER_USER = 10
# Webhooks one room may have.
MAX_WEBHOOKS_PER_ROOM = 20
WEBHOOK_KINDS = ("incoming", "outgoing")
TRIGGERS = ("all", "mention")
# Longest hook secret looked up (ours are 43 characters); longer is a plain 404.
MAX_SECRET = 128


def hook_url(config: Config, secret: str) -> str:
    return f"{config.resolved_public_url}/api/v1/hooks/{secret}"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- bots -----------------------------------------------------------------------------


async def create_bot(request: web.Request) -> web.Response:
    me = await require_auth(request)
    v = Validator(await read_json(request))
    username = v.string(
        "username", required=True, max_len=32, pattern=USERNAME, reason=USERNAME_RULE
    )
    display_name = v.string("display_name", max_len=64, strip=True)
    v.check()
    username = username.lower()
    token, digest = new_token()
    try:
        bot = await request.app[keys.DB].create_bot(
            me.user_id, username, display_name or username, digest, MAX_BOTS_PER_USER
        )
    except NotAllowed:
        raise Forbidden("bots cannot create bots") from None
    except LimitReached:
        raise Conflict(f"at most {MAX_BOTS_PER_USER} bots per account") from None
    except UniqueViolation:
        raise username_taken() from None
    return web.json_response({"bot": bot.to_json(), "token": token}, status=201)


async def list_bots(request: web.Request) -> web.Response:
    """The caller's active bots (every one for admins), in id order."""
    me = await require_auth(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    after = decode_cursor(v, numeric=True) or 0
    v.check()
    db = request.app[keys.DB]
    user = await db.get_user(me.user_id)
    owner = 0 if user is not None and user.is_admin else me.user_id
    bots = await db.bots(owner, after, limit + 1)
    return web.json_response(page(bots, limit, lambda bot: bot.id))


async def delete_bot(request: web.Request) -> web.Response:
    me = await require_auth(request)
    bot_id = path_id(request, "bot_id")
    db = request.app[keys.DB]
    user = await db.get_user(me.user_id)
    actor = Actor(me.user_id, client_ip(request))
    deleted = await db.delete_bot(actor, bot_id, as_admin=user is not None and user.is_admin)
    if deleted is None:
        raise NotFound("no such bot")
    await announce_deactivation(request.app, *deleted)
    return web.Response(status=204)


# --- webhooks -------------------------------------------------------------------------


async def _webhook_fields(request: web.Request) -> WebhookFields:
    """A new webhook's checked settings; an outgoing `url` must be one the guarded
    client may call (public addresses unless CHAT_OUTBOUND_PRIVATE)."""
    v = Validator(await read_json(request))
    name = v.string(
        "name", required=True, min_len=1, max_len=64, strip=True, reason="1-64 characters"
    )
    kind = v.choice("kind", WEBHOOK_KINDS, required=True)
    url = v.string("url", min_len=1, max_len=2048, strip=True)
    trigger = v.choice("trigger", TRIGGERS)
    if kind == "outgoing" and url is None and "url" not in v.errors:
        v.errors["url"] = "required for an outgoing webhook"
    if kind == "incoming":
        for field in ("url", "trigger"):
            if v.source.get(field) is not None:
                v.errors.setdefault(field, "only for outgoing webhooks")
    v.check()
    if kind == "outgoing" and url is not None:
        try:
            await request.app[keys.OUTBOUND].check(url, https_only=False)
        except OutboundRefused as refused:
            raise InvalidRequest.fields({"url": refused.reason}) from None
    secret = secrets.token_urlsafe(32)
    return WebhookFields(
        name,
        kind,
        url if kind == "outgoing" else None,
        (trigger or "all") if kind == "outgoing" else None,
        secret,
        secret_digest(secret),
    )


async def create_webhook(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    room = await visible_room(request.app, room_id, me.user_id)  # 404 if hidden
    if room.my_role not in MANAGERS:  # a server admin too: a hook would read the room
        raise Forbidden("only the room's owner and admins manage its webhooks")
    fields = await _webhook_fields(request)
    actor = Actor(me.user_id, client_ip(request))
    bot_username = f"hook.{secrets.token_hex(8)}"
    try:
        hook, pos = await request.app[keys.DB].create_webhook(
            actor, room_id, fields, bot_username, MAX_WEBHOOKS_PER_ROOM
        )
    except NotAllowed:
        raise Forbidden("only the room's owner and admins (not bots) manage webhooks") from None
    except LimitReached:
        raise Conflict(f"at most {MAX_WEBHOOKS_PER_ROOM} webhooks per room") from None
    except RoomGone:
        raise NotFound("no such room") from None
    announce_join(request.app, room_id, hook.bot, "member", pos, me.user_id)
    if hook.kind == "outgoing":
        request.app[keys.WEBHOOKS].hook_added(room_id)
    config = request.app[keys.CONFIG]
    return web.json_response(hook.to_json(hook_url(config, hook.secret)), status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    """The room's webhooks, for its members; secrets and URLs for its owner and admins
    (their member role: a server admin's moderation does not extend to them)."""
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    room = await member_room(request.app, room_id, me.user_id)
    config = request.app[keys.CONFIG]
    hooks = await request.app[keys.DB].room_webhooks(room_id)
    manager = room.my_role in MANAGERS
    items = [h.to_json(hook_url(config, h.secret) if manager else None) for h in hooks]
    return web.json_response({"items": items})


async def delete_webhook(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    webhook_id = path_id(request, "webhook_id")
    await moderated_room(request.app, room_id, me.user_id)  # 404 if hidden
    actor = Actor(me.user_id, client_ip(request))
    try:
        deleted = await request.app[keys.DB].delete_webhook(actor, room_id, webhook_id)
    except NotAllowed:
        raise Forbidden("only the room's owner and admins manage its webhooks") from None
    if deleted is None:
        raise NotFound("no such webhook")
    await announce_deactivation(request.app, *deleted)
    return web.Response(status=204)


# --- the incoming hook ------------------------------------------------------------------


async def incoming_hook(request: web.Request) -> web.Response:
    """POST /hooks/{secret}: `{text}` (Slack) or `{body}`, optional `client_id`,
    posted as the webhook's bot. Rate limited per client IP and per hook."""
    await _hook_rate(request, f"hooks:ip:{client_ip(request)}")
    secret = request.match_info["secret"]
    hook = None
    if len(secret) <= MAX_SECRET:
        hook = await request.app[keys.DB].webhook_by_secret(secret_digest(secret))
    if (
        hook is None
        or hook.kind != "incoming"
        or not hmac.compare_digest(hook.secret.encode(), secret.encode())
    ):
        raise NotFound("no such hook")
    await _hook_rate(request, f"hooks:hook:{hook.id}")
    fields = await read_json(request)
    text = fields.get("text")
    send = dict(fields)
    if "body" not in send and text is not None:
        send["body"] = text  # Slack's field
    send.pop("text", None)
    posted = await post_message(request.app, hook.bot.id, parse_send(send, hook.room_id))
    return web.Response(
        text=posted.encoded, status=201 if posted.created else 200, content_type="application/json"
    )


async def _hook_rate(request: web.Request, key: str) -> None:
    wait = await request.app[keys.HOOK_LIMITER].hit(key)
    if wait > 0:
        request.app[keys.METRICS].rate_limited.labels("hooks").inc()
        raise RateLimited(wait, "too many hook calls, try again later")
