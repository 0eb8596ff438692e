"""The WebSocket endpoint `/api/v1/ws` (API.md "WebSocket").

Order of a connection's life: Origin check and (optional) header auth before
the upgrade; an `auth` frame within `Config.auth_timeout` otherwise (a deadline on
the clock: pings do not extend it); index the connection in the hub
*before* reading its rooms' positions (so no event slips between); `ready`;
then frames, with live room events held until the first frame after `ready`
is handled (or `Config.ready_hold`) so a resume replays first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web

from .. import conversation, events, keys
from ..auth import Principal, authenticate_token, bearer_token, client_ip
from ..errors import (
    ApiError,
    Forbidden,
    InvalidRequest,
    RateLimited,
    Unauthorized,
    Unavailable,
    is_database_outage,
)
from ..events import text_frame
from ..messages import Posted, mark_read, parse_send, post_message
from ..models import now_ms
from ..rooms import member_room
from ..validation import (
    MAX_INT,
    Validator,
    is_ascii_digits,
    is_storable_text,
    parse_json_object,
)
from .connection import Connection
from .hub import CLOSE_REVOKED

log = logging.getLogger("chat_server.ws")

# API.md: a frame over 64 KiB closes the connection with 1009.
MAX_FRAME_BYTES = 64 * 1024
# Ping interval; a peer that misses a pong within half of it is dropped.
HEARTBEAT_SECONDS = 30.0
# A user's typing notices go out at most once per this many seconds per room.
TYPING_INTERVAL = 3.0
# Rate-limited sends tolerated on one connection before it is closed (1008).
RATE_LIMIT_STRIKES = 10
# Longest `ref` echoed back to the client.
MAX_REF = 256
# Largest `rooms` map accepted in a resume.
MAX_RESUME_ROOMS = 10_000
# Sockets one client IP may hold open before authenticating: each costs a
# socket and memory until its auth deadline, so a flood from one address is refused.
MAX_UNAUTHENTICATED_PER_IP = 50
RESUME_ROOMS_RULE = "an object of room id to last seen pos"


def origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: nothing cross-site to defend against
    origin = origin.rstrip("/")
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[keys.CONFIG].allowed_origins


async def websocket(request: web.Request) -> web.StreamResponse:
    if not origin_allowed(request):
        raise Forbidden("origin not allowed")
    header_token = bearer_token(request)
    principal = None
    if header_token is not None:
        principal = await authenticate_token(request.app, header_token)
    # No permessage-deflate: its per-socket zlib state costs far more memory than
    # chat frames save, and frames are encoded once for all recipients.
    # aiohttp refuses a frame of max_msg_size bytes or more: one byte of headroom
    # lets a frame of exactly MAX_FRAME_BYTES through.
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_FRAME_BYTES + 1, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise InvalidRequest("expected a WebSocket upgrade")
    resume_rooms: dict[int, int] | None = None
    if principal is None:
        pending = request.app[keys.HUB].unauthenticated
        ip = client_ip(request)
        if pending.get(ip, 0) >= MAX_UNAUTHENTICATED_PER_IP:
            raise RateLimited(
                request.app[keys.CONFIG].auth_timeout,
                "too many unauthenticated sockets from this address",
            )
        pending[ip] = pending.get(ip, 0) + 1
        try:
            await ws.prepare(request)
            authed = await _auth_frame(request, ws)
        finally:
            pending[ip] -= 1
            if not pending[ip]:
                del pending[ip]
        if authed is None:
            return ws
        principal, resume_rooms = authed
    else:
        await ws.prepare(request)
    await SocketSession(request, ws, principal).run(resume_rooms)
    return ws


async def _auth_frame(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Principal, dict[int, int] | None] | None:
    """Waits for `{"type": "auth", "token", "rooms"?}`; closes the socket on failure.

    Any other frame is `unauthorized`. The deadline is on the clock: a
    client's pings (answered while waiting) do not extend it.
    """
    try:
        async with asyncio.timeout(request.app[keys.CONFIG].auth_timeout):
            msg = await ws.receive()
    except TimeoutError:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"authentication timed out")
        return None
    if msg.type != WSMsgType.TEXT:
        if not ws.closed:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"expected an auth frame")
        return None
    try:
        try:
            frame = parse_json_object(msg.data, "frame")
        except InvalidRequest:
            frame = {}
        if frame.get("type") != "auth":
            raise Unauthorized("authenticate first: {type: auth, token}")
        if not isinstance(frame.get("token"), str):
            raise InvalidRequest.fields({"token": "required"})
        rooms = _resume_rooms(frame) if "rooms" in frame else None
        try:
            principal = await authenticate_token(request.app, frame["token"])
        except Exception as exc:
            if is_database_outage(exc):
                raise Unavailable("database unavailable") from None
            raise
    except ApiError as error:
        await ws.send_str(events.error(error, frame_ref(msg.data)))
        code = (
            WSCloseCode.TRY_AGAIN_LATER
            if isinstance(error, Unavailable)
            else WSCloseCode.POLICY_VIOLATION
        )
        await ws.close(code=code, message=error.code.encode())
        return None
    return principal, rooms


def frame_ref(data: Any) -> str | None:
    try:
        ref = json.loads(data).get("ref")
    except (ValueError, RecursionError, AttributeError, TypeError):
        return None
    return ref if _valid_ref(ref) else None


def _valid_ref(ref: Any) -> bool:
    """A `ref` we can echo: a short string that encodes to UTF-8."""
    return isinstance(ref, str) and len(ref) <= MAX_REF and is_storable_text(ref)


def _resume_rooms(frame: dict[str, Any]) -> dict[int, int]:
    rooms = frame.get("rooms")
    if not isinstance(rooms, dict) or len(rooms) > MAX_RESUME_ROOMS:
        raise InvalidRequest.fields({"rooms": RESUME_ROOMS_RULE})
    parsed = {}
    for key, pos in rooms.items():
        if (
            not is_ascii_digits(key)
            or isinstance(pos, bool)
            or not isinstance(pos, int)
            or not 0 <= pos <= MAX_INT
        ):
            raise InvalidRequest.fields({"rooms": RESUME_ROOMS_RULE})
        parsed[int(key)] = pos
    return parsed


class SocketSession:
    """One authenticated WebSocket's frame loop (not to be confused with a login
    `models.Session`, which many sockets may share)."""

    __slots__ = ("app", "conn", "hub", "me", "request", "strikes", "typing_sent", "ws")

    # Frame type -> handler method name (class-level: idle sockets stay small).
    HANDLERS: ClassVar[dict[str, str]] = {
        "ping": "on_ping",
        "send": "on_send",
        "typing": "on_typing",
        "read": "on_read",
        "resume": "on_resume",
        "react": "on_react",
        "unreact": "on_unreact",
    }

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, me: Principal) -> None:
        self.app = request.app
        self.request = request
        self.ws = ws
        self.me = me
        self.hub = request.app[keys.HUB]
        self.conn: Connection | None = None
        self.typing_sent: dict[int, float] | None = None  # room -> last typing notice
        self.strikes = 0

    async def run(self, resume_rooms: dict[int, int] | None) -> None:
        me = self.me
        conn = self.conn = self.hub.connect(
            self.ws, self.request, me.user_id, me.session_id, me.token_id
        )
        expiry = None
        if me.expires_at is not None:  # a personal token's socket closes when it expires
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, (me.expires_at - now_ms()) / 1000),
                lambda: conn.abort(CLOSE_REVOKED, "token expired"),
            )
        try:
            if not await self._send_ready(conn):
                return
            if resume_rooms is not None:
                conn.resume(resume_rooms)
                conn.release()
            hold = self.app[keys.CONFIG].ready_hold
            release_timer = asyncio.get_running_loop().call_later(hold, conn.release)
            try:
                # The frame loop lives here, not in a helper coroutine: an idle
                # socket keeps every suspended frame of its handler alive.
                frames_in = self.app[keys.METRICS].events_in
                async for msg in self.ws:
                    frames_in.inc()
                    if msg.type == WSMsgType.TEXT:
                        reply = await self._handle(msg.data)
                        if reply is not None:
                            conn.send(text_frame(reply))
                    elif msg.type == WSMsgType.BINARY:
                        error = InvalidRequest("binary frames are not supported")
                        conn.push(text_frame(events.error(error, None)))
                    conn.release()  # the first frame after `ready` has been handled
                    if self.strikes >= RATE_LIMIT_STRIKES:
                        await conn.flush_and_close(
                            WSCloseCode.POLICY_VIOLATION, "rate limit exceeded"
                        )
                        return
            finally:
                release_timer.cancel()
        finally:
            if expiry is not None:
                expiry.cancel()
            self.hub.disconnect(conn)

    async def _revoked_meanwhile(self) -> bool:
        """Whether the credential this socket authenticated with was revoked between
        that check and the connection's indexing in the hub (from which on a
        revocation reaches it): read again once it is indexed."""
        db, me = self.app[keys.DB], self.me
        if me.token_id is not None:
            return bool(await db.dead_tokens_among([me.token_id]))
        return me.session_id is not None and bool(await db.revoked_among([me.session_id]))

    async def _send_ready(self, conn: Connection) -> bool:
        """Follow the user's rooms from their current positions, and say `ready`.

        (A coroutine of its own so the user and room rows it reads are not
        kept alive for the connection's lifetime.)
        """
        db = self.app[keys.DB]
        user = await db.get_user(self.me.user_id)
        if user is None or user.deactivated or await self._revoked_meanwhile():
            await self.ws.close(code=CLOSE_REVOKED, message=b"credential revoked")
            return False
        positions = await db.positions_of(self.me.user_id)
        self.hub.set_rooms(conn, {room_id: pos for room_id, (_, pos) in positions.items()})
        await self.ws.send_str(events.ready(user, positions))
        self.hub.presence_of_roommates(conn)
        conn.mark_ready()
        return True

    async def _handle(self, data: str) -> str | None:
        ref = None
        try:
            frame = parse_json_object(data, "frame")
            ref = frame.get("ref")
            if ref is not None and not _valid_ref(ref):
                ref = None
                raise InvalidRequest.fields({"ref": f"a string of at most {MAX_REF} characters"})
            kind = frame.get("type")
            name = self.HANDLERS.get(kind) if isinstance(kind, str) else None
            if name is None:
                raise InvalidRequest.fields({"type": "one of " + ", ".join(self.HANDLERS)})
            reply: str | None = await getattr(self, name)(frame)
        except RateLimited as error:
            self.strikes += 1
            return events.error(error, ref)
        except ApiError as error:
            return events.error(error, ref)
        except Exception as exc:
            if is_database_outage(exc):
                return events.error(Unavailable("database unavailable"), ref)
            log.exception("frame failed")
            return events.error(ApiError(), ref)
        return reply

    # --- frame handlers (each returns the reply frame, if any; `ref` checked by _handle)

    async def on_ping(self, frame: dict[str, Any]) -> str:
        return events.pong(frame.get("ref"))

    async def on_send(self, frame: dict[str, Any]) -> None:
        conn, ref = self.conn, frame.get("ref")
        assert conn is not None

        def acknowledge(posted: Posted) -> None:
            """The `ack`, after the commit and before the message's own `message.new`."""
            conn.send(text_frame(events.ack(ref, posted.encoded)))  # message not re-serialized

        await post_message(self.app, self.me.user_id, parse_send(frame), acknowledge)
        self.strikes = 0

    def _room_id(self, frame: dict[str, Any]) -> tuple[Validator, int]:
        v = Validator(frame)
        return v, v.integer("room_id", required=True)

    async def on_typing(self, frame: dict[str, Any]) -> None:
        v, room_id = self._room_id(frame)
        v.check()
        if self.conn is None or not self.conn.follows(room_id):
            await member_room(self.app, room_id, self.me.user_id)  # 404/403 as appropriate
        now = time.monotonic()
        if self.typing_sent is None:
            self.typing_sent = {}
        if now - self.typing_sent.get(room_id, 0.0) < TYPING_INTERVAL:
            return None
        self.typing_sent[room_id] = now
        self.hub.publish(events.typing(room_id, self.me.user_id))
        return None

    async def on_read(self, frame: dict[str, Any]) -> None:
        v, room_id = self._room_id(frame)
        seq = v.integer("seq", required=True, minimum=0)
        v.check()
        await mark_read(self.app, self.me.user_id, room_id, seq)
        return None

    async def on_react(self, frame: dict[str, Any]) -> str:
        return await self._reaction(frame, add=True)

    async def on_unreact(self, frame: dict[str, Any]) -> str:
        return await self._reaction(frame, add=False)

    async def _reaction(self, frame: dict[str, Any], *, add: bool) -> str:
        """`react`/`unreact`: as the REST routes; the `ack` (after the commit) carries
        `{emoji, count, me}` in `result`."""
        v, room_id = self._room_id(frame)
        message_id = v.integer("message_id", required=True)
        v.check()
        emoji = conversation.check_emoji(frame.get("emoji"))
        reaction = await conversation.react(
            self.app, self.me.user_id, room_id, message_id, emoji, add=add
        )
        self.strikes = 0
        return events.ack_result(frame.get("ref"), reaction.to_json())

    async def on_resume(self, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        self.conn.resume(_resume_rooms(frame))
        return None
