"""Who may sign up: `GET /server`, the registration modes, the first admin's
setup token, and the /invites routes (API.md "Registration and server administration").

The setup token. While no active admin exists, start-up makes a one-time token
(128 random bits), stores its SHA-256 in `installation.setup_token_sha256` and
the token in `<CHAT_DATA_DIR>/setup_token` (mode 0600); the banner prints the
link `<public url>/#setup=<token>`. Nodes sharing the database share one token:
the first to store its hash wins (the installation row is locked), and a node
that finds a hash already stored keeps it rather than replacing a link someone
may be about to open. Such a node prints the link only if its own data dir
holds the matching token (a restart, or a shared data dir); otherwise it says
the link is in the data dir of the node that made it. A lost link is never a
dead end: `python run.py create-user NAME --admin` makes an admin from the
shell, which ends the token like its use does (the hash is cleared in the
admin's own transaction). The token file is written before the hash is offered
and renamed into place once it won, so a link is never printed that the
database does not know.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import auth, keys
from .config import Config
from .db import MAX_SEQ, Database, RoomNotManaged, SignupRefused
from .engines import UniqueViolation
from .errors import Forbidden, NotFound
from .models import Actor, User, now_ms
from .paging import decode_cursor, page, page_limit
from .rooms import announce_join
from .validation import Validator, is_storable_text, path_id, read_json

# Which revision-2 capabilities this server has (GET /server): clients compare it
# to the level they need. 2: registration control, invites and administration.
FEATURE_LEVEL = 2
SETUP_FILE = "setup_token"
MAX_INVITE_ROOMS = 20
DEFAULT_INVITE_USES = 1
DEFAULT_INVITE_TTL_S = 7 * 24 * 3600
MAX_INVITE_TTL_S = 30 * 24 * 3600


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the setup token -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupLink:
    """The first admin's setup token as this node found it at start-up (`app[keys.SETUP]`).

    `required`: no admin existed; `token`: the token, when this node holds it
    (None: an admin exists, or another node made the token).
    """

    required: bool
    token: str | None

    def banner(self, public_url: str) -> str | None:
        """The start-up banner's line about the first admin (None once one exists)."""
        if not self.required:
            return None
        shell = "or run: python run.py create-user NAME --admin"
        if self.token is not None:
            return f"first admin: open {public_url}/#setup={self.token} (one use; {shell})"
        return (
            f"first admin: the setup link is in the {SETUP_FILE} file in the data dir of the"
            f" node that made it ({shell})"
        )


async def prepare_setup(db: Database, data_dir: Path) -> SetupLink:
    """Makes or finds the setup token while no admin exists (see the module docstring)."""
    path = data_dir / SETUP_FILE
    if await db.admin_exists():
        await asyncio.to_thread(path.unlink, missing_ok=True)  # a spent token
        return SetupLink(False, None)
    token = secrets.token_urlsafe(16)
    pending = await asyncio.to_thread(_write_private, path, token)
    try:
        stored = await db.offer_setup_token(sha256_hex(token))
        if stored == sha256_hex(token):
            await asyncio.to_thread(pending.replace, path)
            return SetupLink(True, token)
    finally:
        await asyncio.to_thread(pending.unlink, missing_ok=True)
    if stored is None:
        return SetupLink(False, None)
    held = await asyncio.to_thread(_read_token, path)
    return SetupLink(True, held if held is not None and sha256_hex(held) == stored else None)


def _write_private(path: Path, token: str) -> Path:
    """`token` in a new file (mode 0600) next to `path`, for a rename into place."""
    pending = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with os.fdopen(os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(token + "\n")
    return pending


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def discard_setup_file(data_dir: Path, token: str | None = None) -> None:
    """Removes the data dir's setup token file once an admin exists (with `token`:
    only if it holds that token, not another node's)."""
    path = data_dir / SETUP_FILE
    if token is None or _read_token(path) == token:
        path.unlink(missing_ok=True)


async def setup_token(app: web.Application) -> AsyncIterator[None]:
    """Start-up: `app[keys.SETUP]`, for the banner and for embedders and tests."""
    config = app[keys.CONFIG]
    app[keys.SETUP] = await prepare_setup(app[keys.DB], config.data_dir)
    yield


# --- signup ---------------------------------------------------------------------------


async def sign_up(
    app: web.Application, username: str, password: str, display_name: str, invite: str | None
) -> tuple[User, str]:
    """A new account as the registration mode and `invite` allow (403 otherwise):
    the user and its password hash. `invite` may be the setup token (an admin, in
    any mode). Whatever refuses the signup refuses it before anything is created."""
    db, hasher, config = app[keys.DB], app[keys.HASHER], app[keys.CONFIG]
    mode = config.registration
    if invite is None:
        if mode != "open":
            raise Forbidden(
                "signup needs an invite" if mode == "invite" else "registration is closed"
            )
        return await auth.create_account(db, hasher, username, password, display_name)
    if await db.setup_token_matches(sha256_hex(invite)):
        password_hash = await hasher.hash(password)
        with _refusals():
            user = await db.create_setup_admin(
                username, display_name, password_hash, sha256_hex(invite)
            )
        await asyncio.to_thread(discard_setup_file, config.data_dir, invite)
        return user, password_hash
    if mode == "closed":
        refusal, _ = await db.invite_status(invite)
        raise Forbidden(refusal or "registration is closed")
    password_hash = await hasher.hash(password)
    with _refusals():
        user, joined = await db.create_invited_user(username, display_name, password_hash, invite)
    for room_id, pos in joined:
        announce_join(app, room_id, user, "member", pos, None)
    return user, password_hash


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except SignupRefused as exc:
        raise Forbidden(str(exc)) from None
    except UniqueViolation:
        raise auth.username_taken() from None


# --- routes --------------------------------------------------------------------------


async def server_info(request: web.Request) -> web.Response:
    from . import __version__  # the package's, defined after its modules load

    config = request.app[keys.CONFIG]
    return web.json_response(
        {
            "name": config.server_name,
            "version": __version__,
            "feature_level": FEATURE_LEVEL,
            "registration": config.registration,
            "setup_required": not await request.app[keys.DB].admin_exists(),
            "max_upload_mb": config.max_upload_mb,
            "vapid_public_key": request.app[keys.VAPID].public_key,
        }
    )


def _with_url(config: Config, invite: dict[str, Any]) -> dict[str, Any]:
    """An Invite's JSON with its `url`, which the public address gives."""
    return invite | {"url": f"{config.resolved_public_url}/#invite={invite['code']}"}


async def create_invite(request: web.Request) -> web.Response:
    me = await auth.require_auth(request)
    v = Validator(await read_json(request))
    max_uses = v.integer("max_uses", maximum=1000)
    expires_in = v.integer("expires_in", minimum=60, maximum=MAX_INVITE_TTL_S)
    room_ids = v.id_list("room_ids", max_items=MAX_INVITE_ROOMS)
    v.check()
    db = request.app[keys.DB]
    user = await db.get_user(me.user_id)
    if user is None or user.is_bot:
        raise Forbidden("bots cannot create invites")
    code = secrets.token_urlsafe(16)
    expires_at = now_ms() + 1000 * (expires_in or DEFAULT_INVITE_TTL_S)
    actor = Actor(me.user_id, auth.client_ip(request))
    try:
        invite = await db.create_invite(
            actor, code, max_uses or DEFAULT_INVITE_USES, expires_at, room_ids
        )
    except RoomNotManaged as exc:
        if not exc.visible:
            raise NotFound(f"no such room: {exc.room_id}") from None
        raise Forbidden(f"you do not manage room {exc.room_id}") from None
    return web.json_response(_with_url(request.app[keys.CONFIG], invite.to_json()), status=201)


async def list_invites(request: web.Request) -> web.Response:
    """The caller's invites, newest first; an admin's list holds everyone's."""
    me = await auth.require_auth(request)
    v = Validator(request.query, query=True)
    limit = page_limit(v)
    before = decode_cursor(v, numeric=True)
    v.check()
    db = request.app[keys.DB]
    user = await db.get_user(me.user_id)
    creator = None if user is not None and user.is_admin else me.user_id
    invites = await db.list_invites(creator, before or MAX_SEQ, limit + 1)
    body = page(invites, limit, lambda invite: invite.id)
    config = request.app[keys.CONFIG]
    body["items"] = [_with_url(config, item) for item in body["items"]]
    return web.json_response(body)


async def revoke_invite(request: web.Request) -> web.Response:
    me = await auth.require_auth(request)
    invite_id = path_id(request, "invite")
    actor = Actor(me.user_id, auth.client_ip(request))
    if not await request.app[keys.DB].revoke_invite(actor, invite_id):
        raise NotFound("no such invite")
    return web.Response(status=204)


async def check_invite(request: web.Request) -> web.Response:
    """What a signup page shows before the account exists (no auth; rate limited
    per IP like logins, so codes cannot be guessed at speed)."""
    await auth.check_auth_rate(request)
    code = request.match_info["invite"]
    refusal, rooms = (
        await request.app[keys.DB].invite_status(code)
        if is_storable_text(code)  # a NUL, say, names no invite
        else ("unknown invite", [])
    )
    return web.json_response(
        {
            "valid": refusal is None,
            "server_name": request.app[keys.CONFIG].server_name,
            "rooms": [{"id": room_id, "name": name} for room_id, name in rooms],
        }
    )
