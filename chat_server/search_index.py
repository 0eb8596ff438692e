"""SQLite's full-text index, filled behind the sends instead of inside each one.

An FTS5 index written in a send's own transaction flushes a new segment per
commit: about five more pages written and synced per message, and a fifth of
the writer's time. Here a send commits without it; `fts_indexed.upto` marks
how far the index goes (sql/sqlite/011_search_behind.sql). Once `BATCH`
sends are waiting, one step indexes them in the writer's group commit, and a
search first indexes whatever is waiting, so it finds everything committed
before it began, as before. Edits and deletions of indexed messages are kept
in step by triggers in their own transactions; those of messages not yet
indexed need nothing, the indexer reads the body as it is then.

The state is the database's (any process, a restart with messages not yet
indexed); what this object keeps is only a count that says when to index
without being asked.
"""

from __future__ import annotations

import asyncio
import logging

from .engines import Conn, Engine
from .errors import is_database_outage

log = logging.getLogger("chat_server.search_index")

# Sends waiting before the index catches up without a search asking.
BATCH = 256
# Messages one step indexes (a step is one savepoint in a group commit).
STEP_ROWS = 2000


class SearchIndex:
    """Keeps SQLite's `messages_fts` caught up with `messages` (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._waiting = 0  # sends since the last catch-up began
        self._lock = asyncio.Lock()  # one catch-up at a time
        self._background: asyncio.Task[None] | None = None

    def sent(self) -> None:
        """A send committed: once BATCH are waiting, index them in the background."""
        self._waiting += 1
        if self._waiting >= BATCH and self._background is None:
            self._background = asyncio.create_task(self._catch_up_in_background())

    async def before_search(self) -> None:
        """Index every message committed so far that the index does not hold yet."""
        if await self._engine.fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE id > (SELECT upto FROM fts_indexed))"
        ):
            await self._catch_up()

    async def finish(self) -> None:
        """Let a background catch-up finish (before the engine closes)."""
        if self._background is not None:
            await asyncio.wait([self._background])

    async def _catch_up(self) -> None:
        async with self._lock:
            self._waiting = 0
            while await self._engine.atomic(_index_step):
                pass

    async def _catch_up_in_background(self) -> None:
        try:
            await self._catch_up()
        except Exception as exc:  # the next search, or the next BATCH sends, try again
            if is_database_outage(exc):
                log.warning("search index: database unavailable, catching up later")
            else:
                log.exception("search index: catching up failed")
        finally:
            self._background = None


async def _index_step(tx: Conn) -> bool:
    """Index the next STEP_ROWS messages after the mark and move it; True if more wait."""
    upto = await tx.fetchval("SELECT upto FROM fts_indexed")
    next_rows = await tx.fetchrow(
        "SELECT max(id), count(*) FROM"
        " (SELECT id FROM messages WHERE id > $1 ORDER BY id LIMIT $2)",
        upto,
        STEP_ROWS,
    )
    assert next_rows is not None  # an aggregate always has a row
    top, count = next_rows[0], next_rows[1]
    if top is None:
        return False
    await tx.execute(
        "INSERT INTO messages_fts (rowid, body, room_id)"
        " SELECT id, body, room_id FROM messages WHERE id > $1 AND id <= $2",
        upto,
        top,
    )
    await tx.execute("UPDATE fts_indexed SET upto = $1", top)
    return bool(count == STEP_ROWS)
