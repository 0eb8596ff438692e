"""The Python API for code that embeds the server (bots, integrations).

    app = create_app(config)

    async def on_startup(app):
        unsubscribe = subscribe(app, lambda event: print(event["type"]))

    app.on_startup.append(on_startup)   # runs after the app's own resources are up

`ensure_bot(app, name)` gives the bot account to post as (made the first
time, found by name afterwards) and `join_room(app, user_id, room_id)` has it
join a public room. All need a started app (inside `on_startup` or a request).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from . import keys
from .auth import USERNAME, USERNAME_RULE
from .errors import Conflict, InvalidRequest
from .messages import parse_send
from .messages import post_message as _post
from .rooms import join


def subscribe(
    app: web.Application, callback: Callable[[dict[str, Any]], None]
) -> Callable[[], None]:
    """Call `callback(event)` for every committed event this process delivers.

    `event` is the WebSocket frame's object, e.g. `{"type": "message.new",
    "message": {...}}`. The callback runs on the event loop: keep it quick and
    non-blocking (schedule a task for slow work). Returns an unsubscribe function.
    """
    return app[keys.HUB].subscribe(callback)


async def post_message(
    app: web.Application,
    user_id: int,
    room_id: int,
    body: str,
    *,
    client_id: str | None = None,
    reply_to: int | None = None,
    attachments: Sequence[int] = (),
) -> dict[str, Any]:
    """Post a message as `user_id` through the same path as REST and WebSocket sends.

    Returns the committed Message object; raises `ApiError` subclasses
    (InvalidRequest, NotFound, Forbidden, RateLimited) exactly as a client
    would see them. A repeated `client_id` returns the original message.
    """
    fields: dict[str, Any] = {"body": body, "attachments": list(attachments)}
    if client_id is not None:
        fields["client_id"] = client_id
    if reply_to is not None:
        fields["reply_to"] = reply_to
    result = await _post(app, user_id, parse_send(fields, room_id))
    return result.message.to_json()


async def ensure_bot(
    app: web.Application, username: str, *, display_name: str | None = None
) -> dict[str, Any]:
    """The bot account named `username` (a User object), made on first use.

    Raises `ApiError`: InvalidRequest for a name that is not a valid
    username, Conflict when the name belongs to a person or to a deleted bot.
    """
    if USERNAME.fullmatch(username) is None:
        raise InvalidRequest.fields({"username": USERNAME_RULE})
    username = username.lower()
    bot = await app[keys.DB].named_bot(username, display_name or username)
    if not bot.is_bot:
        raise Conflict(f"{username} is a person's account, not a bot")
    if bot.deactivated:
        raise Conflict(f"the bot {username} was deleted")
    return bot.to_json()


async def join_room(app: web.Application, user_id: int, room_id: int) -> dict[str, Any]:
    """`user_id` joins a public room (or one it is in already); returns the Room.

    Raises NotFound for a private room it is not in, Forbidden when banned.
    """
    return (await join(app, room_id, user_id)).to_json()
