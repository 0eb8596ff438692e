"""chat_server: a self-hosted real-time chat server.

Embedders use `create_app(Config(...))` to get an `aiohttp.web.Application`.
"""

from __future__ import annotations

from .app import create_app
from .config import Config

__version__ = "0.1.0"
__all__ = ["Config", "__version__", "create_app"]
