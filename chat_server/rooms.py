"""/rooms and /dm routes: rooms, membership and roles.

A private room or DM is invisible (404) to non-members; a public room is
readable by anyone signed in, but only members post. Membership changes
are announced after commit and update the hub's room index live.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from . import events, keys, stream
from .auth import client_ip, require_auth
from .db import AccountDeactivated, Banned, NotMember, Refused, RoomGone
from .errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from .models import Actor, Room, User
from .paging import decode_cursor, page, page_limit
from .validation import Validator, path_id, read_json

ROOM_KINDS = ("public", "private")
ROOM_NAME_RULE = "1-80 characters"
T = TypeVar("T")


async def visible_room(app: web.Application, room_id: int, user_id: int) -> Room:
    """The room as the user sees it; 404 if it does not exist or is hidden from them."""
    room = await app[keys.DB].get_room(room_id, user_id)
    if room is None or (room.kind != "public" and room.my_role is None):
        raise NotFound("no such room")
    return room


async def member_room(app: web.Application, room_id: int, user_id: int) -> Room:
    """The room, if the user is a member; 403 for a public room they have not joined."""
    room = await visible_room(app, room_id, user_id)
    if room.my_role is None:
        raise Forbidden("join the room first")
    return room


async def as_member(app: web.Application, room_id: int, user_id: int, change: Awaitable[T]) -> T:
    """Commits a change that needs membership; a non-member (or one removed meanwhile)
    gets the non-member's answer: 404 for a room hidden from them, 403 otherwise."""
    try:
        return await change
    except NotMember:
        await member_room(app, room_id, user_id)  # raises the right 404/403
        raise Forbidden("join the room first") from None


async def moderated_room(
    app: web.Application, room_id: int, user_id: int
) -> tuple[Room, str | None]:
    """The room and the role the user moderates it with: a server admin acts as its
    owner, and so may find a private room they are not in (not read it: that still
    goes through `visible_room`)."""
    db = app[keys.DB]
    room = await db.get_room(room_id, user_id)
    user = await db.get_user(user_id)
    if room is not None and user is not None and user.is_admin:
        return room, "owner"
    room = await visible_room(app, room_id, user_id)
    return room, room.my_role


def refused_join(error: Banned | RoomGone) -> Forbidden | NotFound:
    """The answer to a join or add that a ban or the room's deletion refused."""
    if isinstance(error, Banned):
        return Forbidden("banned from this room")
    return NotFound("no such room")


# --- announcements -------------------------------------------------------------------


def announce_join(
    app: web.Application, room_id: int, user: User, role: str, pos: int, by: int | None
) -> None:
    """After a committed join or add (`member.joined` at `pos`): the room hears of
    the member, and the member's connections (on every process) follow the room
    from there, announcing it as `room.added`."""
    hub = app[keys.HUB]
    hub.publish(events.room_event(events.member_joined(room_id, pos, user.to_json(), role, by)))
    hub.joined(user.id, room_id, pos)


def announce_leave(app: web.Application, room_id: int, user: User, pos: int, reason: str) -> None:
    """After a committed removal (`member.left` at `pos`): the removed user's
    connections deliver it, stop following the room there and say `room.removed`."""
    member = events.member_left(room_id, pos, user.to_json(), reason)
    app[keys.HUB].publish(events.room_event(member, removes=user.id))


def announce_role(app: web.Application, room_id: int, user: User, role: str, pos: int) -> None:
    """After a committed role change (`member.role` at `pos`): the room hears of it."""
    member = events.member_role(room_id, pos, user.to_json(), role)
    app[keys.HUB].publish(events.room_event(member))


# --- routes --------------------------------------------------------------------------


async def create_room(request: web.Request) -> web.Response:
    me = await require_auth(request)
    v = Validator(await read_json(request))
    name = v.string("name", required=True, min_len=1, max_len=80, strip=True, reason=ROOM_NAME_RULE)
    topic = v.string("topic", max_len=1000, strip=True)
    kind = v.choice("kind", ROOM_KINDS, required=True)
    v.check()
    db = request.app[keys.DB]
    try:
        room = await db.create_room(kind, name, topic or "", me.user_id)
    except AccountDeactivated:  # deactivated since the request was authenticated
        raise Unauthorized("session revoked") from None
    owner = await db.get_user(me.user_id)
    if owner is not None:
        announce_join(request.app, room.id, owner, "owner", room.last_pos, None)  # pos 1
    return web.json_response(room.to_json(), status=201)


async def list_rooms(request: web.Request) -> web.Response:
    me = await require_auth(request)
    rooms = await request.app[keys.DB].list_my_rooms(me.user_id)
    return web.json_response({"items": [r.to_json() for r in rooms], "next_cursor": None})


async def public_rooms(request: web.Request) -> web.Response:
    me = await require_auth(request)
    v = Validator(request.query, query=True)
    query = v.string("q", max_len=200, strip=True) or ""
    limit = page_limit(v)
    after = decode_cursor(v, numeric=True) or 0
    v.check()
    rooms = await request.app[keys.DB].list_public_rooms(me.user_id, query, after, limit + 1)
    return web.json_response(page(rooms, limit, lambda room: room.id))


async def get_room(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    return web.json_response(room.to_json())


async def patch_room(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(await read_json(request))
    name = v.string("name", min_len=1, max_len=80, strip=True, reason=ROOM_NAME_RULE)
    topic = v.string("topic", max_len=1000, strip=True)
    v.check()
    changed = None
    if room.kind != "dm":
        changed = await request.app[keys.DB].update_room(room.id, me.user_id, name, topic)
    if changed is None:
        raise Forbidden("only the room's owner or an admin may change it")
    updated, pos = changed
    request.app[keys.HUB].publish(events.room_updated_event(room.id, pos))
    return web.json_response(updated.to_json())


async def join(app: web.Application, room_id: int, user_id: int) -> Room:
    """The user joins a public room (or one they are in already): the room as they see it."""
    room = await visible_room(app, room_id, user_id)
    if room.my_role is not None:
        return room
    db = app[keys.DB]
    try:
        pos = await db.add_member(room.id, user_id, "member", None)
    except AccountDeactivated:  # deactivated since the request was authenticated
        raise Unauthorized("session revoked") from None
    except (Banned, RoomGone) as error:
        raise refused_join(error) from None
    user = await db.get_user(user_id)
    if pos is not None and user is not None:  # None: joined concurrently, announced there
        announce_join(app, room.id, user, "member", pos, None)
    joined = await db.get_room(room.id, user_id)
    if joined is None:
        raise NotFound("no such room")
    return joined


async def join_room(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await join(request.app, path_id(request, "room_id"), me.user_id)
    return web.json_response(room.to_json())


async def leave_room(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    if room.kind == "dm":
        raise Forbidden("a direct message cannot be left")
    await _remove(request.app, room, me.user_id, "left", me.user_id)
    return web.Response(status=204)


async def _remove(
    app: web.Application, room: Room, user_id: int, reason: str, actor_id: int
) -> None:
    db = app[keys.DB]
    user = await db.get_user(user_id)
    pos = await db.remove_member(room.id, user_id, reason, actor_id)
    if pos is not None and user is not None:
        announce_leave(app, room.id, user, pos, reason)


async def list_members(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    after = decode_cursor(v, numeric=True) or 0
    v.check()
    members = await request.app[keys.DB].list_members(room.id, after, limit + 1)
    return web.json_response(page(members, limit, lambda member: member.user.id))


async def add_member(request: web.Request) -> web.Response:
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(await read_json(request))
    user_id = v.integer("user_id", required=True)
    role = v.choice("role", ("admin", "member")) or "member"
    v.check()
    if room.kind == "dm":
        raise Forbidden("only the room's owner or an admin may add members")
    db = request.app[keys.DB]
    try:
        pos = await db.add_member(room.id, user_id, role, me.user_id)
    except Refused as refusal:  # the caller's role, as it is when the add commits
        raise Forbidden(str(refusal)) from None
    except AccountDeactivated:  # or no such account
        raise NotFound("no such user") from None
    except (Banned, RoomGone) as error:
        raise refused_join(error) from None
    if pos is None:
        raise Conflict("already a member")
    user = await db.get_user(user_id)
    if user is not None:
        announce_join(request.app, room.id, user, role, pos, me.user_id)
    member = await db.get_member(room.id, user_id)
    if member is None:  # removed again in between
        raise NotFound("no such member")
    return web.json_response(member.to_json(), status=201)


async def kick_member(request: web.Request) -> web.Response:
    """Removes a member, as the room's owner or an admin or a server admin (audited)."""
    me = await require_auth(request)
    room, _ = await moderated_room(request.app, path_id(request, "room_id"), me.user_id)
    target_id = path_id(request, "user_id")
    if room.kind == "dm":
        raise Forbidden("only the room's owner or an admin may remove members")
    db = request.app[keys.DB]
    try:
        pos = await db.kick_member(room.id, target_id, Actor(me.user_id, client_ip(request)))
    except Refused as refusal:  # the roles, as they are when the kick commits
        raise Forbidden(str(refusal)) from None
    if pos is None:
        raise NotFound("not a member")
    target = await db.get_user(target_id)
    if target is not None:
        announce_leave(request.app, room.id, target, pos, "kicked")
    return web.Response(status=204)


async def set_member_role(request: web.Request) -> web.Response:
    """Makes a member an admin or a member again (audited; see `Database._may_give_role`)."""
    me = await require_auth(request)
    room, _ = await moderated_room(request.app, path_id(request, "room_id"), me.user_id)
    target_id = path_id(request, "user_id")
    v = Validator(await read_json(request))
    role = v.choice("role", ("admin", "member"), required=True)
    v.check()
    if room.kind == "dm":
        raise Forbidden("a direct message has no roles")
    db = request.app[keys.DB]
    try:
        before, pos = await db.set_member_role(
            room.id, target_id, role, Actor(me.user_id, client_ip(request))
        )
    except Refused as refusal:  # the roles, as they are when the change commits
        raise Forbidden(str(refusal)) from None
    if before is None:
        raise NotFound("not a member")
    if pos is not None:  # committed: announced even if the member leaves meanwhile
        user = await db.get_user(target_id)
        if user is not None:
            announce_role(request.app, room.id, user, role, pos)
    member = await db.get_member(room.id, target_id)
    if member is None:  # removed again in between
        raise NotFound("not a member")
    return web.json_response(member.to_json())


async def open_dm(request: web.Request) -> web.Response:
    me = await require_auth(request)
    v = Validator(await read_json(request))
    other_id = v.integer("user_id", required=True)
    v.check()
    if other_id == me.user_id:
        raise InvalidRequest.fields({"user_id": "another user's id"})
    db = request.app[keys.DB]
    other = await db.get_user(other_id)
    if other is None or other.deactivated:
        raise NotFound("no such user")
    try:
        room, created = await db.get_or_create_dm(me.user_id, other_id)
    except AccountDeactivated:  # one of the two, since the checks above
        raise NotFound("no such user") from None
    if created:  # its first two events: the members' `member.joined`, low id first
        hub = request.app[keys.HUB]
        users = {me.user_id: await db.get_user(me.user_id), other_id: other}
        for pos, user_id in enumerate(sorted(users), start=1):
            user = users[user_id]
            if user is not None:
                member = events.member_joined(room.id, pos, user.to_json(), "member", None)
                hub.publish(events.room_event(member))
        for user_id in users:
            hub.joined(user_id, room.id, 1)  # each member sees both joins
    return web.json_response(room.to_json(), status=201 if created else 200)


async def room_events(request: web.Request) -> web.Response:
    """GET /rooms/{id}/events: page a room's stream (members only), e.g. over a `gap`."""
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    v = Validator(request.query, query=True)
    after_pos = v.integer("after_pos", minimum=0)
    before_pos = v.integer("before_pos", minimum=1)
    limit = page_limit(v)
    v.check()
    if room.my_role is None:
        raise Forbidden("join the room first")
    found, has_more = await stream.read_events(
        request.app[keys.DB],
        room.id,
        me.user_id,
        after_pos=after_pos,
        before_pos=before_pos,
        limit=limit,
    )
    return web.json_response({"items": [e.payload for e in found], "has_more": has_more})
