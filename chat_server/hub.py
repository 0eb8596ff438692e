"""In-process fan-out of committed events to this process's WebSocket connections."""

from __future__ import annotations

from .db import Database


class Hub:
    def __init__(self, db: Database) -> None:
        self.db = db

    def close_sessions(self, session_ids: list[int]) -> None:
        """Close the open connections of revoked sessions."""

    async def shutdown(self) -> None:
        """Close every connection (1001) after flushing what is queued."""
