"""Personal access tokens: `/auth/tokens` (API.md "Bots and integrations").

A token is `chat_pat_` and 256 random bits (base64url), shown once when it is
made; only its SHA-256 is stored (`auth.token_digest`), and a request's token
is looked up by that digest through a unique index (`auth.authenticate_token`
takes either kind of token). A token acts as its owner until it is revoked,
expires, or its owner is deactivated; it is not a session: it survives
password changes and logouts, and cannot itself manage sessions or tokens
(`auth.require_session`). Revoking closes its WebSockets on every process
(`Hub.close_tokens`).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from . import keys
from .auth import PERSONAL_TOKEN_PREFIX, require_session, token_digest
from .errors import Conflict, NotFound
from .models import now_ms
from .validation import Validator, path_id, read_json

# Live tokens one account may hold: enough for every script, bounded all the same.
MAX_TOKENS_PER_USER = 50
# Longest lifetime asked for in `expires_in` (seconds): ten years.
MAX_TOKEN_TTL_S = 10 * 365 * 86400
TOKEN_NAME_RULE = "1-64 characters"


def new_token() -> tuple[str, str]:
    """A fresh personal token and the digest it is stored as."""
    token = PERSONAL_TOKEN_PREFIX + secrets.token_urlsafe(32)  # 32 bytes: 256 bits
    return token, token_digest(token)


async def create_token(request: web.Request) -> web.Response:
    user_id, _ = await require_session(request)
    v = Validator(await read_json(request))
    name = v.string(
        "name", required=True, min_len=1, max_len=64, strip=True, reason=TOKEN_NAME_RULE
    )
    expires_in = v.integer("expires_in", minimum=60, maximum=MAX_TOKEN_TTL_S, nullable=True)
    v.check()
    token, digest = new_token()
    expires_at = None if expires_in is None else now_ms() + 1000 * expires_in
    made = await request.app[keys.DB].create_access_token(
        user_id, name, digest, expires_at, MAX_TOKENS_PER_USER
    )
    if made is None:
        raise Conflict(f"at most {MAX_TOKENS_PER_USER} live tokens per account: revoke one")
    return web.json_response(made.to_json() | {"token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    user_id, _ = await require_session(request)
    tokens = await request.app[keys.DB].access_tokens(user_id)
    return web.json_response({"items": [t.to_json() for t in tokens]})


async def revoke_token(request: web.Request) -> web.Response:
    user_id, _ = await require_session(request)
    token_id = path_id(request, "token_id")
    if not await request.app[keys.DB].revoke_access_token(user_id, token_id):
        raise NotFound("no such token")
    request.app[keys.HUB].close_tokens([token_id])
    return web.Response(status=204)
