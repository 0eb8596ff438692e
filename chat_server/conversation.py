"""Reactions and pins (API.md "Conversation"): shared by the REST routes and the WebSocket.

Each change is a room event committed with it (db.py "reactions and pins")
and published after the commit. `reaction.*` events carry no per-viewer
data and are encoded once; `message.pinned`/`unpinned` carry the message,
whose reactions' `me` differs by member, so each connection reads them from
the stream as its user sees them (events.viewer_message_event).

A deleted message loses its reactions and its pin in the deletion's own
transaction; its `message.deleted` says so (no `reaction.removed` or
`message.unpinned` of their own), and its tombstone shows `reactions: []`
and `pinned: false`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from . import emoji as emoji_rules
from . import events, keys
from .auth import require_auth
from .db import LimitReached, NotAllowed
from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .messages import check_message_rate
from .models import Message, Reaction
from .paging import decode_cursor, page, page_limit
from .rooms import as_member, visible_room
from .validation import Validator, path_id, read_json

# API.md: at most 20 distinct emoji on a message, 50 pins in a room.
MAX_DISTINCT_EMOJI = 20
MAX_PINS = 50
# Longer than any emoji grapheme or `:name:`: refused before it is parsed.
MAX_EMOJI_CHARS = 64
T = TypeVar("T")


def check_emoji(value: Any) -> str:
    """The emoji of a path or frame, or 400 naming `emoji`."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_EMOJI_CHARS
        or not emoji_rules.is_reaction(value)
    ):
        raise InvalidRequest.fields({"emoji": emoji_rules.RULE})
    return value


async def react(
    app: web.Application, user_id: int, room_id: int, message_id: int, emoji: str, add: bool
) -> Reaction:
    """Adds (or removes) the user's reaction; a repeat changes nothing and announces nothing.

    Reacting is rate limited with sends and needs membership, checked under
    the member row's lock in the transaction that commits the change.
    """
    await check_message_rate(app, user_id)
    db = app[keys.DB]
    commit = (
        db.react(room_id, message_id, user_id, emoji, MAX_DISTINCT_EMOJI)
        if add
        else db.unreact(room_id, message_id, user_id, emoji)
    )
    try:
        change = await as_member(app, room_id, user_id, commit)
    except LimitReached:
        raise Conflict(f"a message has at most {MAX_DISTINCT_EMOJI} distinct emoji") from None
    if change is None:
        raise NotFound("no such message")
    if change.pos is not None:
        payload = events.reaction(
            "reaction.added" if add else "reaction.removed",
            room_id,
            change.pos,
            message_id=message_id,
            seq=change.seq,
            emoji=emoji,
            user_id=user_id,
            count=change.count,
        )
        app[keys.HUB].publish(events.room_event(payload))
    return Reaction(emoji, change.count, add)


async def pin(app: web.Application, user_id: int, room_id: int, message_id: int) -> Message:
    """Pins a message (room managers, or anyone in a DM); pinning it again changes nothing."""
    room = await visible_room(app, room_id, user_id)
    db = app[keys.DB]
    pinned = await _pin_change(
        app, room_id, user_id, db.pin(room_id, message_id, user_id, room.kind == "dm", MAX_PINS)
    )
    if pinned is None:
        raise NotFound("no such message")
    message, pos = pinned
    [message] = await db.with_reactions([message], user_id)
    if pos is not None:
        _announce_pin(app, "message.pinned", message, pos, user_id)
    return message


async def unpin(app: web.Application, user_id: int, room_id: int, message_id: int) -> None:
    room = await visible_room(app, room_id, user_id)
    db = app[keys.DB]
    unpinned = await _pin_change(
        app, room_id, user_id, db.unpin(room_id, message_id, user_id, room.kind == "dm")
    )
    if unpinned is None:
        raise NotFound("no such pinned message")
    message, pos = unpinned
    [message] = await db.with_reactions([message], user_id)
    _announce_pin(app, "message.unpinned", message, pos, user_id)


def _announce_pin(app: web.Application, kind: str, message: Message, pos: int, by: int) -> None:
    payload = events.pin_payload(kind, message.room_id, pos, message.to_json(), by)
    app[keys.HUB].publish(events.viewer_message_event(payload))


async def _pin_change(app: web.Application, room_id: int, user_id: int, change: Awaitable[T]) -> T:
    try:
        return await as_member(app, room_id, user_id, change)
    except NotAllowed:
        raise Forbidden("only the room's owner or an admin may pin (anyone in a DM)") from None
    except LimitReached:
        raise Conflict(f"a room has at most {MAX_PINS} pins") from None


# --- routes --------------------------------------------------------------------------


def _reaction_target(request: web.Request) -> tuple[int, int, str]:
    room_id = path_id(request, "room_id")
    message_id = path_id(request, "message_id")
    return room_id, message_id, check_emoji(request.match_info["emoji"])


async def put_reaction(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id, message_id, emoji = _reaction_target(request)
    reaction = await react(request.app, me.user_id, room_id, message_id, emoji, add=True)
    return web.json_response(reaction.to_json())


async def delete_reaction(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id, message_id, emoji = _reaction_target(request)
    reaction = await react(request.app, me.user_id, room_id, message_id, emoji, add=False)
    return web.json_response(reaction.to_json())


async def list_reactors(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id, message_id, emoji = _reaction_target(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    after_user_id = decode_cursor(v, numeric=True)
    v.check()
    room = await visible_room(request.app, room_id, me.user_id)
    users = await request.app[keys.DB].reactors(
        room.id, message_id, emoji, after_user_id or 0, limit + 1
    )
    if users is None:
        raise NotFound("no such message")
    return web.json_response(page(users, limit, lambda user: user.id))


async def pin_message(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    v = Validator(await read_json(request))
    message_id = v.integer("message_id", required=True, minimum=1)
    v.check()
    message = await pin(request.app, me.user_id, room_id, message_id)
    return web.json_response(message.to_json())


async def unpin_message(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room_id, message_id = path_id(request, "room_id"), path_id(request, "message_id")
    await unpin(request.app, me.user_id, room_id, message_id)
    return web.Response(status=204)


async def list_pins(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    db = request.app[keys.DB]
    pinned = await db.with_reactions(await db.pinned_messages(room.id, MAX_PINS), me.user_id)
    return web.json_response({"items": [message.to_json() for message in pinned]})
