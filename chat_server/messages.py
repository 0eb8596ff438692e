"""Messages: the one send path (REST, WebSocket and embedders), history, threads, edits,
reads, search and mentions of me."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from . import events, keys, mentions
from .auth import client_ip, require_auth
from .db import MANAGERS, ReplyNotFound
from .errors import Forbidden, InvalidRequest, NotFound, RateLimited
from .events import dumps
from .models import Actor, Message
from .paging import decode_cursor, page, page_limit
from .rooms import as_member, member_room, moderated_room, visible_room
from .validation import Validator, path_id, read_json

MAX_BODY = 4000
MAX_ATTACHMENTS = 10
CLIENT_ID = re.compile(r"[\x20-\x7e]{1,64}")
MAX_ID = 2**63 - 1  # above every id: where "newest first" pages start
T = TypeVar("T")


@dataclass(frozen=True)
class SendRequest:
    room_id: int
    body: str
    client_id: str | None = None
    reply_to: int | None = None
    attachments: tuple[int, ...] = ()


def parse_send(source: dict[str, Any], room_id: int | None = None) -> SendRequest:
    """Validates a send from a REST body or a WebSocket `send` frame (which names the room)."""
    v = Validator(source)
    if room_id is None:
        room_id = v.integer("room_id", required=True)
    body = v.string("body", max_len=MAX_BODY, max_after_strip=True) or ""
    client_id = v.string(
        "client_id", max_len=64, pattern=CLIENT_ID, reason="1-64 printable ASCII characters"
    )
    reply_to = v.integer("reply_to", nullable=True)
    attachments = v.id_list("attachments", max_items=MAX_ATTACHMENTS)
    if not body and not attachments and "body" not in v.errors:
        v.errors["body"] = f"1-{MAX_BODY} characters after trimming, unless attachments are given"
    v.check()
    return SendRequest(room_id, body, client_id, reply_to, tuple(attachments))


@dataclass(frozen=True)
class Posted:
    """A committed (or, for a retried client_id, the original) message."""

    message: Message
    created: bool
    encoded: str  # the Message object as JSON, serialized once for event, ack and response


async def check_message_rate(app: web.Application, user_id: int) -> None:
    """Sends and reactions share the user's message rate (CHAT_MESSAGE_RATE)."""
    wait = await app[keys.MESSAGE_LIMITER].hit(f"messages:{user_id}")
    if wait > 0:
        app[keys.METRICS].rate_limited.labels("messages").inc()
        raise RateLimited(wait, "sending too fast")


async def post_message(
    app: web.Application,
    user_id: int,
    send: SendRequest,
    acknowledge: Callable[[Posted], None] | None = None,
) -> Posted:
    """Validate, commit with the room's next seq and pos, then announce (ack after commit).

    The one send path: REST, WebSocket and embedded bots all come here.
    `acknowledge` is called after the commit and before the announcement,
    so a WebSocket sender's `ack` precedes its own `message.new`.
    """
    await check_message_rate(app, user_id)
    db = app[keys.DB]
    media = []
    if send.attachments:
        await member_room(app, send.room_id, user_id)
        for media_id in send.attachments:
            item = await db.get_media(media_id)
            if item is None or item.uploader_id != user_id:
                raise InvalidRequest.fields({"attachments": "media you uploaded"})
            media.append(item)
    written = mentions.find(send.body)
    try:
        result = await as_member(
            app,
            send.room_id,
            user_id,
            db.send_message(
                send.room_id, user_id, send.body, send.client_id, send.reply_to, media, written
            ),
        )
    except ReplyNotFound:
        raise InvalidRequest.fields({"reply_to": "a message id in the same room"}) from None
    message = result.message
    if not result.created:  # a retried client_id: the stored message as it is now
        [message] = await db.with_reactions([message], user_id)
    as_json = message.to_json()
    posted = Posted(message, result.created, dumps(as_json))
    if acknowledge is not None:
        acknowledge(posted)
    if result.created:
        app[keys.METRICS].messages_persisted.inc()
        event = events.message_event("message.new", message, message.pos, (as_json, posted.encoded))
        app[keys.HUB].publish(event)
        app[keys.PUSHER].message_posted(message)  # queued: pushes never delay a send
        app[keys.WEBHOOKS].message_posted(message.room_id)  # outgoing hooks, if any
    return posted


async def mark_read(app: web.Application, user_id: int, room_id: int, seq: int) -> int:
    """Move the user's read marker (forward only) and tell the room's members."""
    await member_room(app, room_id, user_id)
    marker = await app[keys.DB].mark_read(room_id, user_id, seq)
    if marker is None:
        raise NotFound("no such room")
    app[keys.HUB].publish(events.read(room_id, user_id, marker))
    return marker


# --- routes --------------------------------------------------------------------------


async def send_message(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    send = parse_send(await read_json(request), room_id)
    posted = await post_message(request.app, me.user_id, send)
    return web.Response(
        text=posted.encoded,
        status=201 if posted.created else 200,
        content_type="application/json",
    )


async def history(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(request.query, query=True)
    before_seq = v.integer("before_seq", minimum=0)
    after_seq = v.integer("after_seq", minimum=0)
    limit = page_limit(v)
    v.check()
    db = request.app[keys.DB]
    messages, has_more = await db.history(
        room.id, after_seq=after_seq, before_seq=before_seq, limit=limit
    )
    messages = await db.with_reactions(messages, me.user_id)
    return web.json_response({"items": [m.to_json() for m in messages], "has_more": has_more})


async def thread(request: web.Request) -> web.Response:
    """The replies of the thread a message starts (or, for a reply, belongs to),
    ascending seq: visible as the room's history is, tombstones included."""
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(request.query, query=True)
    after_seq = v.integer("after_seq", minimum=0)
    limit = page_limit(v)
    v.check()
    db = request.app[keys.DB]
    message = await db.get_message(room.id, path_id(request, "message_id"))
    if message is None:
        raise NotFound("no such message")
    replies, has_more = await db.thread_replies(
        message.thread_id or message.id, after_seq or 0, limit
    )
    replies = await db.with_reactions(replies, me.user_id)
    return web.json_response({"items": [m.to_json() for m in replies], "has_more": has_more})


async def _own_message(request: web.Request) -> tuple[Any, Message]:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    message = await request.app[keys.DB].get_message(room.id, path_id(request, "message_id"))
    if message is None:
        raise NotFound("no such message")
    return room, message


async def edit_message(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room, message = await _own_message(request)
    v = Validator(await read_json(request))
    body = v.string(
        "body",
        required=True,
        min_len=1,
        max_len=MAX_BODY,
        max_after_strip=True,
        reason=f"1-{MAX_BODY} characters after trimming",
    )
    v.check()
    if message.sender_id != me.user_id or room.my_role is None:
        raise Forbidden("only the sender may edit a message")
    edited = await as_member(
        request.app,
        room.id,
        me.user_id,
        request.app[keys.DB].edit_message(
            room.id, message.id, me.user_id, body, mentions.find(body)
        ),
    )
    if edited is None:
        raise NotFound("no such message")
    [message] = await request.app[keys.DB].with_reactions([edited.message], me.user_id)
    # Its reactions' `me` differs by member: each connection reads it as its user sees it.
    as_json = message.to_json()
    payload = events.message_payload("message.edited", room.id, edited.pos, as_json)
    request.app[keys.HUB].publish(events.viewer_message_event(payload))
    return web.json_response(as_json)


async def delete_message(request: web.Request) -> web.Response:
    """As the sender, or a room's owner or admin or a server admin (others' messages: audited)."""
    me = await require_auth(request)
    room, role = await moderated_room(request.app, path_id(request, "room_id"), me.user_id)
    db = request.app[keys.DB]
    message = await db.get_message(room.id, path_id(request, "message_id"))
    if message is None:
        raise NotFound("no such message")
    if role is None or (message.sender_id != me.user_id and role not in MANAGERS):
        raise Forbidden("only the sender or the room's owner or an admin may delete a message")
    actor = Actor(me.user_id, client_ip(request))
    deleted = await as_member(
        request.app, room.id, me.user_id, db.delete_message(room.id, message.id, actor)
    )
    if deleted is not None:
        tombstone, pos = deleted
        request.app[keys.HUB].publish(events.message_event("message.deleted", tombstone, pos))
    return web.Response(status=204)


async def read_marker(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    v = Validator(await read_json(request))
    seq = v.integer("seq", required=True, minimum=0)
    v.check()
    await mark_read(request.app, me.user_id, room_id, seq)
    return web.Response(status=204)


async def search(request: web.Request) -> web.Response:
    me = await require_auth(request)
    v = Validator(request.query, query=True)
    query = v.string("q", required=True, min_len=1, max_len=200, strip=True)
    room_id = v.integer("room_id")
    limit = page_limit(v)
    before_id = decode_cursor(v, numeric=True)
    v.check()
    db = request.app[keys.DB]
    found = await db.search_messages(me.user_id, query, room_id, before_id or MAX_ID, limit + 1)
    found = await db.with_reactions(found, me.user_id)
    return web.json_response(page(found, limit, lambda message: message.id))


async def my_mentions(request: web.Request) -> web.Response:
    """Others' messages mentioning me (by name or `@room`) in the rooms I am in, newest first."""
    me = await require_auth(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    before_id = decode_cursor(v, numeric=True)
    v.check()
    db = request.app[keys.DB]
    found = await db.mentions_of(me.user_id, before_id or MAX_ID, limit + 1)
    found = await db.with_reactions(found, me.user_id)
    return web.json_response(page(found, limit, lambda message: message.id))
