"""The room stream read back: room events rebuilt from the current rows.

Every change to a room is committed with the room's next `pos` (db.py): a
message's row carries the pos of its `message.new`, every other change is a
`room_events` row naming what it touched. Reading the stream joins those
entries to the rows *as they are now*, so a replayed `message.new` of a
message deleted since is its tombstone and a deleted body is never sent
again (API.md "Room stream"). Gap fills, polling and
`GET /rooms/{id}/events` read through `read_events`; a resume reads all its
rooms at once through `read_ranges`, rebuilt the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import events
from .events import dumps, text_frame
from .models import Message, Room, StreamEntry, User

if TYPE_CHECKING:
    from .db import Database


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One room event as a viewer receives it: its pos, its object, and whom it removes."""

    pos: int
    payload: dict[str, Any]
    removes: int | None  # the user a `member.left` removes from the room


async def read_events(
    db: Database,
    room_id: int,
    viewer_id: int,
    *,
    after_pos: int | None,
    before_pos: int | None,
    limit: int,
) -> tuple[list[RoomEvent], bool]:
    """Up to `limit` events in ascending pos, and whether more lie in the paging direction.

    With `after_pos` it pages forward from there (up to `before_pos`);
    otherwise it returns the newest events before `before_pos`.
    """
    entries, has_more = await db.stream_entries(
        room_id, after_pos=after_pos, before_pos=before_pos, limit=limit
    )
    return await _built(db, viewer_id, entries), has_more


async def read_ranges(
    db: Database, viewer_id: int, ranges: Sequence[tuple[int, int, int]]
) -> dict[int, list[RoomEvent]]:
    """{room_id: its events in (after_pos, upto_pos], ascending} for several rooms
    (`ranges` of (room_id, after_pos, upto_pos)) read together: a resume's replay
    costs a handful of queries however many rooms it covers."""
    entries, messages = await db.stream_ranges(ranges)
    built: dict[int, list[RoomEvent]] = {}
    for entry, event in zip(entries, await _built(db, viewer_id, entries, messages), strict=True):
        built.setdefault(entry.room_id, []).append(event)
    return built


async def _built(
    db: Database,
    viewer_id: int,
    entries: list[StreamEntry],
    read: dict[int, Message] | None = None,
) -> list[RoomEvent]:
    """The entries as the viewer receives them, the rows they name read in one
    query per kind (messages with reactions, users, rooms); messages already
    `read` with the entries are not read again."""
    messages = dict(read or {})
    messages.update(
        await db.messages_by_ids(
            sorted({e.message_id for e in entries if e.message_id is not None} - messages.keys())
        )
    )
    if messages:  # reactions as the viewer sees them, for the whole page at once
        with_reactions = await db.with_reactions(list(messages.values()), viewer_id)
        messages = {message.id: message for message in with_reactions}
    users = await db.users_by_ids(
        sorted({e.user_id for e in entries if e.user_id is not None and e.message_id is None})
    )
    updated = sorted({e.room_id for e in entries if e.type == "room.updated"})
    rooms = await db.rooms_seen_by(viewer_id, updated) if updated else {}
    return [
        RoomEvent(
            entry.pos,
            _payload(entry, messages, users, rooms.get(entry.room_id)),
            entry.user_id if entry.type == "member.left" else None,
        )
        for entry in entries
    ]


def _payload(
    entry: StreamEntry, messages: dict[int, Message], users: dict[int, User], room: Room | None
) -> dict[str, Any]:
    """The wire object of one entry, from the rows it names as they are now.

    Rows named by the stream are never deleted (messages become tombstones;
    a room's events go with the room), so each lookup finds its row.
    """
    room_id, pos = entry.room_id, entry.pos
    if entry.type in ("reaction.added", "reaction.removed"):
        # As it happened at this pos: the count stored with the event.
        assert entry.message_id is not None and entry.user_id is not None
        assert entry.detail is not None and entry.reaction_count is not None
        return events.reaction(
            entry.type,
            room_id,
            pos,
            message_id=entry.message_id,
            seq=messages[entry.message_id].seq,
            emoji=entry.detail,
            user_id=entry.user_id,
            count=entry.reaction_count,
        )
    if entry.message_id is not None:
        message = messages[entry.message_id].to_json()
        if entry.type in ("message.pinned", "message.unpinned"):
            return events.pin_payload(entry.type, room_id, pos, message, entry.actor_id)
        return events.message_payload(entry.type, room_id, pos, message)
    if entry.type == "room.updated":
        assert room is not None
        return events.room_updated(room.to_json(), pos)
    assert entry.user_id is not None
    user = users[entry.user_id].to_json()
    if entry.type == "member.joined":
        return events.member_joined(room_id, pos, user, entry.detail, entry.actor_id)
    if entry.type == "member.left":
        return events.member_left(room_id, pos, user, entry.detail)
    return events.member_role(room_id, pos, user, entry.detail)


class SharedRoomUpdate:
    """A `room.updated` read once for every connection of this process that follows
    the room: one query whatever the member count, however many of them wait.

    Each member sees the room differently (their role, read marker, mentions),
    so the event cannot be encoded once; instead the first connection to need it
    reads the room as each of `viewer_ids` sees it, and the others share that
    read. A viewer it has no frame for (no longer a member) reads the stream.
    """

    __slots__ = ("_read", "db", "pos", "room_id", "viewer_ids")

    def __init__(self, db: Database, room_id: int, pos: int, viewer_ids: Sequence[int]) -> None:
        self.db = db
        self.room_id = room_id
        self.pos = pos
        self.viewer_ids = sorted(set(viewer_ids))
        self._read: asyncio.Task[dict[int, bytes]] | None = None

    async def frame_for(self, user_id: int) -> bytes | None:
        """The encoded frame as `user_id` sees the room (None: read it from the stream)."""
        if self._read is None:
            self._read = asyncio.ensure_future(self._frames())
            # Retrieved even if every waiting writer is cancelled (sockets closed).
            self._read.add_done_callback(lambda task: task.cancelled() or task.exception())
        # One writer's cancellation must not cancel the read the others wait for.
        frames = await asyncio.shield(self._read)
        return frames.get(user_id)

    async def _frames(self) -> dict[int, bytes]:
        rooms = await self.db.room_seen_by_members(self.room_id, self.viewer_ids)
        return {
            user_id: text_frame(dumps(events.room_updated(room.to_json(), self.pos)))
            for user_id, room in rooms.items()
        }
