"""Moderation routes: room deletion, bans, and reports of messages to the server's admins.

A room's owner and admins moderate it; a server admin moderates any room as
its owner would (rooms.moderated_room) without gaining its history. Each
action is audited in its own transaction (db.py `# --- moderation ---`).
Reports reach the admins' sockets on every process as `report.new`.
"""

from __future__ import annotations

from aiohttp import web

from . import events, keys
from .auth import client_ip, require_admin, require_auth
from .db import MANAGERS, Refused, RoomGone
from .engines import UniqueViolation
from .errors import Conflict, Forbidden, NotFound
from .models import Actor, Room
from .paging import decode_cursor, page, page_limit
from .rooms import announce_leave, moderated_room, visible_room
from .validation import MAX_INT, Validator, path_id, read_json

REPORT_REASONS = ("spam", "abuse", "illegal", "other")
REPORT_DECISIONS = ("resolved", "dismissed")
REPORT_STATES = ("open", *REPORT_DECISIONS)
# Free text a moderator or reporter adds (a ban's reason, a report's comment).
MAX_NOTE = 1000


async def _managed(request: web.Request) -> tuple[Room, Actor]:
    """The room of the path, and the caller as its moderator (403 for a non-manager)."""
    me = await require_auth(request)
    room, role = await moderated_room(request.app, path_id(request, "room_id"), me.user_id)
    if room.kind == "dm" or role not in MANAGERS:
        raise Forbidden("only the room's owner or an admin may moderate it")
    return room, Actor(me.user_id, client_ip(request))


# --- rooms ---------------------------------------------------------------------------


async def delete_room(request: web.Request) -> web.Response:
    """DELETE /rooms/{id}: the owner or a server admin (not a room admin)."""
    me = await require_auth(request)
    room, role = await moderated_room(request.app, path_id(request, "room_id"), me.user_id)
    if room.kind == "dm" or role != "owner":
        raise Forbidden("only the room's owner may delete it")
    db = request.app[keys.DB]
    try:
        removed = await db.delete_room(room.id, Actor(me.user_id, client_ip(request)))
    except Refused:
        raise Forbidden("only the room's owner may delete it") from None
    except RoomGone:
        raise NotFound("no such room") from None
    users = await db.users_by_ids([user_id for user_id, _ in removed])
    for user_id, pos in removed:
        if user_id in users:
            announce_leave(request.app, room.id, users[user_id], pos, "room_deleted")
    return web.Response(status=204)


# --- bans ----------------------------------------------------------------------------


async def ban_user(request: web.Request) -> web.Response:
    room, actor = await _managed(request)
    v = Validator(await read_json(request))
    user_id = v.integer("user_id", required=True, minimum=1)
    reason = v.string("reason", max_len=MAX_NOTE, strip=True) or ""
    v.check()
    db = request.app[keys.DB]
    user = await db.get_user(user_id)
    if user is None:
        raise NotFound("no such user")
    try:
        banned = await db.ban_member(room.id, user.id, reason, actor)
    except Refused:
        raise Forbidden("cannot ban yourself or a member of equal or higher role") from None
    if banned is None:
        raise Conflict("already banned")
    ban, pos = banned
    if pos is not None:
        announce_leave(request.app, room.id, user, pos, "banned")
    return web.json_response(ban.to_json(), status=201)


async def list_bans(request: web.Request) -> web.Response:
    room, _ = await _managed(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    after = decode_cursor(v, numeric=True) or 0
    v.check()
    bans = await request.app[keys.DB].list_bans(room.id, after, limit + 1)
    return web.json_response(page(bans, limit, lambda ban: ban.user.id))


async def unban_user(request: web.Request) -> web.Response:
    room, actor = await _managed(request)
    user_id = path_id(request, "user_id")
    try:
        lifted = await request.app[keys.DB].unban_member(room.id, user_id, actor)
    except Refused:
        raise Forbidden("only the room's owner or an admin may moderate it") from None
    if not lifted:
        raise NotFound("not banned")
    return web.Response(status=204)


# --- reports -------------------------------------------------------------------------


async def report_message(request: web.Request) -> web.Response:
    """A report of a message the caller can read; 409 when they reported it already."""
    me = await require_auth(request)
    room = await visible_room(request.app, path_id(request, "room_id"), me.user_id)
    message_id = path_id(request, "message_id")
    v = Validator(await read_json(request))
    reason = v.choice("reason", REPORT_REASONS, required=True)
    comment = v.string("comment", max_len=MAX_NOTE, strip=True) or ""
    v.check()
    db = request.app[keys.DB]
    try:
        report_id = await db.create_report(room.id, message_id, me.user_id, reason, comment)
    except UniqueViolation:
        raise Conflict("you reported this message already") from None
    if report_id is None:
        raise NotFound("no such message")
    report = await db.get_report(report_id)
    admins = await db.admin_ids()
    if report is not None and admins:
        request.app[keys.HUB].publish(events.report_new(report.to_json(), tuple(admins)))
    return web.json_response({"id": report_id}, status=201)


async def list_reports(request: web.Request) -> web.Response:
    """GET /admin/reports?state=: newest first (admins only)."""
    await require_admin(request)
    v = Validator(request.query, query=True)
    state = v.choice("state", REPORT_STATES) or "open"
    limit = page_limit(v)
    before = decode_cursor(v, numeric=True)
    v.check()
    reports = await request.app[keys.DB].reports_page(
        state, MAX_INT if before is None else before, limit + 1
    )
    return web.json_response(page(reports, limit, lambda report: report.id))


async def decide_report(request: web.Request) -> web.Response:
    """PATCH /admin/reports/{id}: resolve or dismiss an open report (admins only)."""
    actor = await require_admin(request)
    report_id = path_id(request, "report_id")
    v = Validator(await read_json(request))
    state = v.choice("state", REPORT_DECISIONS, required=True)
    v.check()
    db = request.app[keys.DB]
    report = await db.decide_report(report_id, state, actor)
    if report is None:
        if await db.get_report(report_id) is None:
            raise NotFound("no such report")
        raise Conflict("the report was decided already")
    return web.json_response(report.to_json())
