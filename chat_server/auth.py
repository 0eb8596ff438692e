"""Passwords, tokens, sessions, and the /auth routes.

Access and refresh tokens are HS256 JWTs naming the user (`sub`) and the
session (`sid`); a `typ` claim keeps a refresh token from passing as an access
token, and `iss` names the database that issued them (its installation id),
so another database sharing the secret key, where the same ids may name other
rows, refuses them. Each request checks its session in the database, so
logout is effective at once on every process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import bcrypt
import jwt
from aiohttp import web

from . import keys
from .config import Config, ConfigError
from .db import Database
from .engines import UniqueViolation
from .errors import Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from .models import Actor, User, now_ms
from .validation import Validator, is_ascii_digits, path_id, read_json

ALGORITHM = "HS256"
USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
USERNAME_RULE = "3-32 characters of a-z 0-9 _ . -"
PASSWORD_RULE = "8-1024 characters"
# What a failed login says, whatever failed (unknown user, wrong password, deactivated).
WRONG_CREDENTIALS = "wrong username or password"

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
# Sessions' last_used_at is written at most this often (ms), not on every request.
SESSION_TOUCH_INTERVAL_MS = 60_000
SECRET_FILE = "secret_key"
# Domain separation for the password pre-hash (see PasswordHasher).
PREHASH_KEY = b"chat_server/bcrypt-prehash/v1"
# Seconds a token's `iat`/`nbf` may lie in the future: the clock skew tolerated
# between the node that issued it and the node checking it. Without it a node
# whose clock is behind refuses fresh tokens, refresh tokens included, so the
# client has no way out until its clock catches up. It does not extend `exp`
# (see TokenService.decode): a lifetime stays a hard upper bound, and a node
# whose clock is ahead only ends a token early, which a refresh covers.
CLOCK_SKEW_LEEWAY_S = 30


def load_secret_key(config: Config) -> bytes:
    """CHAT_SECRET_KEY, or a key generated once into the data dir (mode 0600)."""
    if config.secret_key is not None:
        return config.secret_key.encode()
    path = Path(config.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise ConfigError(f"{path}: secret key shorter than 32 bytes") from None
        return key
    key = secrets.token_urlsafe(48).encode()
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    return key


class PasswordHasher:
    """bcrypt on a small thread pool, so the event loop never waits on it.

    bcrypt only reads 72 bytes (bcrypt 5 raises beyond). Every password is
    first reduced to a 44-byte base64 HMAC-SHA256, so long passwords keep all
    their entropy and nothing is truncated.
    """

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="bcrypt"
        )
        self._dummy_hash: bytes | None = None

    @staticmethod
    def _prehash(password: str) -> bytes:
        digest = hmac.new(PREHASH_KEY, password.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    async def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.rounds)
        hashed = await self._run(bcrypt.hashpw, self._prehash(password), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Checks `password`; with no hash (unknown user) it spends the same time and fails."""
        if hashed is None:
            if self._dummy_hash is None:
                self._dummy_hash = (await self.hash(secrets.token_hex(16))).encode()
            await self._run(bcrypt.checkpw, b"not-the-password", self._dummy_hash)
            return False
        return await self._run(bcrypt.checkpw, self._prehash(password), hashed.encode())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user, and the session (a login) or the personal access
    token (tokens.py) their credential belongs to: exactly one of the two."""

    user_id: int
    session_id: int | None
    token_id: int | None = None
    expires_at: int | None = None  # a personal token's end (epoch ms), if it has one


class TokenService:
    """Issues and checks tokens; `installation` is the id of the database
    whose sessions they name (`Database.installation_id`)."""

    def __init__(self, key: bytes, access_ttl: int, refresh_ttl: int) -> None:
        self._key = key
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def _encode(
        self, installation: str, typ: str, user_id: int, session_id: int, ttl: int, **extra: str
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": installation,
            "sub": str(user_id),
            "sid": session_id,
            "typ": typ,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims | extra, self._key, algorithm=ALGORITHM)

    def issue(
        self, installation: str, user_id: int, session_id: int, refresh_jti: str
    ) -> dict[str, object]:
        return {
            "access_token": self._encode(
                installation, "access", user_id, session_id, self.access_ttl
            ),
            "refresh_token": self._encode(
                installation, "refresh", user_id, session_id, self.refresh_ttl, jti=refresh_jti
            ),
            "expires_in": self.access_ttl,
        }

    def decode(self, token: str, typ: str, installation: str) -> dict[str, Any]:
        """Claims of a valid token of type `typ` issued by `installation`, else Unauthorized.

        PyJWT's `leeway` would stretch `exp` as much as `iat`/`nbf`, so expiry
        is checked here, without it (see CLOCK_SKEW_LEEWAY_S).
        """
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=installation,
                leeway=CLOCK_SKEW_LEEWAY_S,
                options={
                    "require": ["exp", "iat", "iss", "sub", "sid", "typ"],
                    "verify_exp": False,
                },
            )
        except jwt.PyJWTError:
            raise Unauthorized("invalid or expired token") from None
        exp, sid, sub = claims.get("exp"), claims.get("sid"), claims.get("sub")
        if (
            not isinstance(exp, int)
            or exp <= time.time()
            or claims.get("typ") != typ
            or not isinstance(sid, int)
            or not isinstance(sub, str)
            or not is_ascii_digits(sub)
            or (typ == "refresh" and not isinstance(claims.get("jti"), str))
        ):
            raise Unauthorized("invalid or expired token")
        return claims


# Personal access tokens (tokens.py) start so; anything else is a JWT access token.
PERSONAL_TOKEN_PREFIX = "chat_pat_"


def token_digest(token: str) -> str:
    """What is stored of a personal token, and what it is looked up by. Its 256
    random bits need no slow hash: a SHA-256 of them cannot be reversed."""
    return hashlib.sha256(token.encode()).hexdigest()


async def authenticate_token(app: web.Application, token: str) -> Principal:
    """The principal of a valid access token whose session is still live, or of
    a live personal access token (not revoked or expired, its owner active)."""
    if token.startswith(PERSONAL_TOKEN_PREFIX):
        return await _authenticate_personal(app, token)
    claims = app[keys.TOKENS].decode(token, "access", app[keys.DB].installation_id)
    user_id, session_id = int(claims["sub"]), claims["sid"]
    session = await app[keys.DB].get_session(session_id)
    if session is None or session.revoked or session.user_id != user_id:
        raise Unauthorized("session revoked")
    if session.last_used_at < now_ms() - SESSION_TOUCH_INTERVAL_MS:
        await app[keys.DB].touch_session(session.id, now_ms() - SESSION_TOUCH_INTERVAL_MS)
    return Principal(user_id, session_id)


async def _authenticate_personal(app: web.Application, token: str) -> Principal:
    db = app[keys.DB]
    found = await db.token_owner(token_digest(token))
    now = now_ms()
    expired = found is not None and found.expires_at is not None and found.expires_at <= now
    if found is None or not found.live or expired:
        raise Unauthorized("invalid, expired or revoked token")
    if found.last_used_at is None or found.last_used_at < now - SESSION_TOUCH_INTERVAL_MS:
        await db.touch_access_token(found.id, now - SESSION_TOUCH_INTERVAL_MS)
    return Principal(found.user_id, None, found.id, found.expires_at)


def bearer_token(request: web.Request) -> str | None:
    """The Bearer token of the Authorization header; None if absent, 401 if malformed."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected Authorization: Bearer <token>")
    return token.strip()


async def require_auth(request: web.Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    principal = await authenticate_token(request.app, token)
    request[keys.USER_ID] = principal.user_id  # for the access log
    return principal


async def require_session(request: web.Request) -> tuple[int, int]:
    """(user id, session id) of a caller signed in with a login's access token.

    Sessions, logout, password changes and personal tokens are managed from
    a login only: a personal access token cannot end sessions or make tokens
    that would outlive its own revocation (403)."""
    me = await require_auth(request)
    if me.session_id is None:
        raise Forbidden("this needs a login's access token, not a personal access token")
    return me.user_id, me.session_id


async def require_admin(request: web.Request) -> Actor:
    """The calling server admin, as the actor of what they do (403 for anyone else).

    The flag is read from the database on each call, so a demotion applies to
    the admin's existing sessions at once."""
    me = await require_auth(request)
    user = await request.app[keys.DB].get_user(me.user_id)
    if user is None or not user.is_admin:
        raise Forbidden("administrators only")
    return Actor(me.user_id, client_ip(request))


def client_ip(request: web.Request) -> str:
    """The caller's IP; behind a trusted proxy, the address it appended last."""
    if request.app[keys.CONFIG].trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.remote or "unknown"


async def check_auth_rate(request: web.Request, username: str | None = None) -> None:
    """The auth limiter, per IP and (for a login or signup) per username."""
    limiter = request.app[keys.AUTH_LIMITER]
    waits = [await limiter.hit(f"auth:ip:{client_ip(request)}")]
    if username is not None:
        waits.append(await limiter.hit(f"auth:user:{username}"))
    if max(waits) > 0:
        request.app[keys.METRICS].rate_limited.labels("auth").inc()
        raise RateLimited(max(waits), "too many attempts, try again later")


async def _start_session(
    request: web.Request, user: User, password_hash: str, status: int
) -> web.Response:
    """A new session for `user`, if `password_hash`, just verified or set, is still theirs."""
    jti = secrets.token_urlsafe(16)
    user_agent = request.headers.get("User-Agent", "")[:512]
    db = request.app[keys.DB]
    session = await db.create_session(user.id, password_hash, jti, user_agent)
    if session is None:  # the password changed since it was verified
        request.app[keys.METRICS].login_failures.inc()
        raise Unauthorized(WRONG_CREDENTIALS)
    tokens = request.app[keys.TOKENS].issue(db.installation_id, user.id, session.id, jti)
    return web.json_response({"user": user.to_json(), **tokens}, status=status)


async def create_account(
    db: Database,
    hasher: PasswordHasher,
    username: str,
    password: str,
    display_name: str | None,
    *,
    is_admin: bool = False,
    actor: Actor | None = None,
) -> tuple[User, str]:
    """Makes an account from checked fields, with no invite (open signup, the shell,
    an admin): the user and its password hash; Conflict when the (case-insensitive)
    username is taken. Signups with an invite go through `registration.sign_up`.
    An admin's creation (`actor`) is audited."""
    username = username.lower()
    password_hash = await hasher.hash(password)
    try:
        user = await db.create_user(
            username, display_name or username, password_hash, is_admin=is_admin, actor=actor
        )
    except UniqueViolation:
        raise username_taken() from None
    return user, password_hash


def username_taken() -> Conflict:
    return Conflict("username is taken", details={"fields": {"username": "taken"}})


# --- routes ------------------------------------------------------------------------


async def signup(request: web.Request) -> web.Response:
    v = Validator(await read_json(request))
    username = v.string(
        "username", required=True, max_len=32, pattern=USERNAME, reason=USERNAME_RULE
    )
    password = v.string("password", required=True, min_len=8, max_len=1024, reason=PASSWORD_RULE)
    display_name = v.string("display_name", max_len=64, strip=True)
    invite = v.string("invite", min_len=1, max_len=256)
    v.check()
    username = username.lower()
    await check_auth_rate(request, username)
    # registration builds on this module (require_auth, create_account): imported here
    from .registration import sign_up

    user, password_hash = await sign_up(
        request.app, username, password, display_name or username, invite
    )
    return await _start_session(request, user, password_hash, 201)


async def login(request: web.Request) -> web.Response:
    v = Validator(await read_json(request))
    username = v.string("username", required=True, min_len=1, max_len=64)
    password = v.string("password", required=True, min_len=1, max_len=1024)
    v.check()
    username = username.lower()
    await check_auth_rate(request, username)
    found = await request.app[keys.DB].get_credentials(username)
    if found is not None and (found[0].deactivated or found[0].is_bot):
        found = None  # refused as an unknown user is, as slowly (bots have no password)
    ok = await request.app[keys.HASHER].verify(password, found[1] if found else None)
    if not ok or found is None:
        request.app[keys.METRICS].login_failures.inc()
        raise Unauthorized(WRONG_CREDENTIALS)
    return await _start_session(request, found[0], found[1], 200)


async def refresh(request: web.Request) -> web.Response:
    v = Validator(await read_json(request))
    token = v.string("refresh_token", required=True, min_len=1, max_len=4096)
    v.check()
    db = request.app[keys.DB]
    claims = request.app[keys.TOKENS].decode(token, "refresh", db.installation_id)
    user_id, session_id = int(claims["sub"]), claims["sid"]
    session = await db.get_session(session_id)
    if session is None or session.user_id != user_id:
        raise Unauthorized("invalid or expired token")
    new_jti = secrets.token_urlsafe(16)
    outcome = await db.rotate_refresh(session_id, claims["jti"], new_jti)
    user = await db.get_user(user_id)
    if user is None or user.deactivated:  # its sessions ended: answered as a login is
        raise Unauthorized(WRONG_CREDENTIALS)
    if outcome != "rotated":
        if outcome == "reused":
            request.app[keys.HUB].close_sessions([session_id])
        raise Unauthorized("refresh token already used or revoked")
    tokens = request.app[keys.TOKENS].issue(db.installation_id, user_id, session_id, new_jti)
    return web.json_response({"user": user.to_json(), **tokens})


async def logout(request: web.Request) -> web.Response:
    user_id, current = await require_session(request)
    await request.app[keys.DB].revoke_session(user_id, current)
    request.app[keys.HUB].close_sessions([current])
    return web.Response(status=204)


async def list_sessions(request: web.Request) -> web.Response:
    user_id, current = await require_session(request)
    sessions = await request.app[keys.DB].list_sessions(user_id)
    return web.json_response({"items": [s.to_json(current) for s in sessions]})


async def delete_session(request: web.Request) -> web.Response:
    user_id, _ = await require_session(request)
    session_id = path_id(request, "session_id")
    if not await request.app[keys.DB].revoke_session(user_id, session_id):
        raise NotFound("no such session")
    request.app[keys.HUB].close_sessions([session_id])
    return web.Response(status=204)


async def change_password(request: web.Request) -> web.Response:
    user_id, current = await require_session(request)
    v = Validator(await read_json(request))
    old = v.string("old_password", required=True, min_len=1, max_len=1024)
    new = v.string("new_password", required=True, min_len=8, max_len=1024, reason=PASSWORD_RULE)
    v.check()
    db, hasher = request.app[keys.DB], request.app[keys.HASHER]
    old_hash = await db.get_password_hash(user_id)
    if old_hash is None or not await hasher.verify(old, old_hash):
        raise Unauthorized("wrong password")
    revoked = await db.set_password(user_id, old_hash, await hasher.hash(new), current)
    if revoked is None:  # another change won the race; `old` is no longer the password
        raise Unauthorized("wrong password")
    request.app[keys.HUB].close_sessions(revoked)
    return web.Response(status=204)
