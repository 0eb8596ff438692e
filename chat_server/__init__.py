"""chat_server: a self-hosted real-time chat server.

Embedders use `create_app(Config(...))` to get an `aiohttp.web.Application`,
`subscribe(app, callback)` to follow committed events and
`post_message(app, user_id, room_id, body)` to post as a user, `ensure_bot` for
a bot account to post as, and `join_room` to have it join public rooms.
"""

from __future__ import annotations

from .app import create_app
from .config import Config
from .embed import ensure_bot, join_room, post_message, subscribe
from .errors import ApiError

__version__ = "0.1.0"
__all__ = [
    "ApiError",
    "Config",
    "__version__",
    "create_app",
    "ensure_bot",
    "join_room",
    "post_message",
    "subscribe",
]
