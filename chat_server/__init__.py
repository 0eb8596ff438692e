"""chat_server: a self-hosted real-time chat server.

Embedders use `create_app(Config(...))` to get an `aiohttp.web.Application`,
`subscribe(app, callback)` to follow committed events and
`post_message(app, user_id, room_id, body)` to post as a user (for bots).
"""

from __future__ import annotations

from .app import create_app
from .config import Config
from .embed import post_message, subscribe
from .errors import ApiError

__version__ = "0.1.0"
__all__ = ["ApiError", "Config", "__version__", "create_app", "post_message", "subscribe"]
