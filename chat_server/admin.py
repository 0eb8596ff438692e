"""/admin routes: accounts (list, create, promote, deactivate, erase) and the audit log.

Admins only (`auth.require_admin`, which reads the flag on every request).
Each change is one transaction in db.py with its audit entry; what it ended
(sessions, memberships) is announced after commit: the sessions' sockets
close on every process, and each room hears `member.left` (`deactivated`).
An erasure queues a job that the worker of jobs.py carries out.
"""

from __future__ import annotations

from aiohttp import web

from . import keys
from .auth import PASSWORD_RULE, USERNAME, USERNAME_RULE, create_account, require_admin
from .db import ACCOUNT_STATES, BotAdmin, Deactivation, LastAdmin
from .errors import Conflict, NotFound
from .models import User
from .paging import decode_cursor, page, page_limit
from .rooms import announce_leave
from .validation import Validator, path_id, read_json

LAST_ADMIN = "the last active admin cannot be demoted or deactivated"


def _flag(v: Validator, name: str) -> bool | None:
    """An optional boolean field of a JSON body."""
    value = v.source.get(name)
    if value is None or isinstance(value, bool):
        return value
    v.errors.setdefault(name, "true or false")
    return None


async def announce_deactivation(app: web.Application, user: User, ended: Deactivation) -> None:
    """After a committed deactivation: close the account's (and its bots') sockets
    everywhere (sessions' and personal tokens') and tell each room who left it."""
    app[keys.HUB].close_sessions(ended.session_ids)
    app[keys.HUB].close_tokens(ended.token_ids)
    bots = await app[keys.DB].users_by_ids(ended.bot_ids)
    accounts = {user.id: user, **bots}
    for room_id, member_id, pos in ended.left_rooms:
        announce_leave(app, room_id, accounts[member_id], pos, "deactivated")


async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    v = Validator(request.query, query=True)
    prefix = v.string("q", max_len=200, strip=True) or ""
    state = v.choice("state", tuple(ACCOUNT_STATES)) or "all"
    limit = page_limit(v)
    after = decode_cursor(v, numeric=True) or 0
    v.check()
    found = await request.app[keys.DB].admin_users(prefix, state, after, limit + 1)
    return web.json_response(page(found, limit, lambda account: account.user.id))


async def create_user(request: web.Request) -> web.Response:
    actor = await require_admin(request)
    v = Validator(await read_json(request))
    username = v.string(
        "username", required=True, max_len=32, pattern=USERNAME, reason=USERNAME_RULE
    )
    password = v.string("password", required=True, min_len=8, max_len=1024, reason=PASSWORD_RULE)
    display_name = v.string("display_name", max_len=64, strip=True)
    is_admin = _flag(v, "is_admin")
    v.check()
    db = request.app[keys.DB]
    user, _ = await create_account(
        db,
        request.app[keys.HASHER],
        username,
        password,
        display_name,
        is_admin=bool(is_admin),
        actor=actor,
    )
    created = await db.admin_user(user.id)
    assert created is not None  # accounts are never deleted
    return web.json_response(created.to_json(), status=201)


async def patch_user(request: web.Request) -> web.Response:
    actor = await require_admin(request)
    user_id = path_id(request, "user_id")
    v = Validator(await read_json(request))
    is_admin = _flag(v, "is_admin")
    deactivated = _flag(v, "deactivated")
    v.check()
    try:
        changed = await request.app[keys.DB].change_account(
            actor, user_id, is_admin=is_admin, deactivated=deactivated
        )
    except LastAdmin:
        raise Conflict(LAST_ADMIN) from None
    except BotAdmin:
        raise Conflict("a bot cannot be an admin") from None
    if changed is None:
        raise NotFound("no such user")
    account, ended = changed
    await announce_deactivation(request.app, account.user, ended)
    return web.json_response(account.to_json())


async def erase_user(request: web.Request) -> web.Response:
    """202: the account is deactivated and blanked now; its messages go in the background."""
    actor = await require_admin(request)
    user_id = path_id(request, "user_id")
    try:
        erased = await request.app[keys.DB].erase_account(actor, user_id)
    except LastAdmin:
        raise Conflict(LAST_ADMIN) from None
    if erased is None:
        raise NotFound("no such user")
    account, ended, _ = erased
    await announce_deactivation(request.app, account.user, ended)
    request.app[keys.JOBS].wake()
    return web.json_response(account.to_json(), status=202)


async def audit_log(request: web.Request) -> web.Response:
    await require_admin(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    before = decode_cursor(v, numeric=True)
    v.check()
    entries = await request.app[keys.DB].audit_page(before or 2**63 - 1, limit + 1)
    return web.json_response(page(entries, limit, lambda entry: entry.id))
