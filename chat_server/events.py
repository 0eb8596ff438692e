"""The wire vocabulary: every frame the server sends, built and encoded here only.

A committed change is an `Event`: its frame is serialized once and encoded
once as a WebSocket frame, and the same bytes go to every recipient's
transport (DESIGN.md invariant 6); the relay carries the same text to the
other processes. Frames meant for one connection (`ready`, `ack`, `error`,
...) are plain JSON text. API.md "WebSocket" describes each frame.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ApiError
    from .models import Message, Room, User


def dumps(payload: Any) -> str:
    """Compact JSON, UTF-8 as is: the one serializer of frames and responses."""
    return _encode(payload)


# One encoder for every call (json.dumps with options builds one per call).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def text_frame(text: str) -> bytes:
    """A complete unmasked WebSocket text frame (RFC 6455), as a server sends it.

    Encoded once per event, the same bytes go to every recipient's transport.
    """
    data = text.encode()
    size = len(data)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + data


@dataclass(frozen=True, slots=True)
class Event:
    """A committed event: its frame (serialized and encoded once) and who receives it.

    A room event (`pos` set) goes to the connections following `room_id`,
    each delivering the room's events in `pos` order, gaps filled from the
    database; `removes` names the user a `member.left` removes. A
    `per_viewer` room event (`room.updated`, whose room each member sees
    differently) is not sent as it is: receivers read it from the stream.
    Other events go to the room's connections (minus `exclude_user`'s) or to
    `user_ids`' connections. `payload` is the frame's object when the event
    was built here; a relayed event has only its text, parsed on demand.
    """

    frame: str
    room_id: int | None = None
    user_ids: tuple[int, ...] = ()
    pos: int | None = None
    removes: int | None = None
    per_viewer: bool = False
    exclude_user: int | None = None
    payload: dict[str, Any] | None = field(default=None, compare=False)
    wire: bytes = field(default=b"", compare=False)

    @classmethod
    def of(cls, payload: dict[str, Any], frame: str = "", **target: Any) -> Event:
        """An event of `payload`; `frame` is its text when the caller has it already."""
        frame = frame or dumps(payload)
        return cls(frame, payload=payload, wire=text_frame(frame), **target)

    @classmethod
    def relayed(cls, frame: str, **target: Any) -> Event:
        """An event another process published: its frame text arrives finished."""
        return cls(frame, wire=text_frame(frame), **target)

    def as_object(self) -> dict[str, Any]:
        """The frame's object (parsed here if the event was relayed)."""
        return self.payload if self.payload is not None else json.loads(self.frame)


# --- room events (API.md "Room stream"): payloads, and Events of them -----------------


def room_event(payload: dict[str, Any], removes: int | None = None) -> Event:
    """A committed room event for the room's connections, delivered in `pos` order."""
    return Event.of(payload, room_id=payload["room_id"], pos=payload["pos"], removes=removes)


def message_event(
    kind: str, message: Message, pos: int, encoded: tuple[dict[str, Any], str] | None = None
) -> Event:
    """`message.new`, `message.edited` or `message.deleted` at `pos` of the message's room.

    `encoded` is the message's JSON object and text when the caller made them
    already: the text is spliced into the frame rather than serialized again.
    """
    if encoded is None:
        as_json = message.to_json()
        encoded = as_json, dumps(as_json)
    as_json, text = encoded
    room_id = message.room_id
    return Event.of(
        message_payload(kind, room_id, pos, as_json),
        frame=f'{{"type":"{kind}","room_id":{room_id},"pos":{pos},"message":{text}}}',
        room_id=room_id,
        pos=pos,
    )


def message_payload(kind: str, room_id: int, pos: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "room_id": room_id, "pos": pos, "message": message}


def pin_payload(
    kind: str, room_id: int, pos: int, message: dict[str, Any], by: int | None
) -> dict[str, Any]:
    """`message.pinned` or `message.unpinned`, `by` whom."""
    return {"type": kind, "room_id": room_id, "pos": pos, "message": message, "by": by}


def viewer_message_event(payload: dict[str, Any]) -> Event:
    """A room event carrying a message whose `reactions` each member sees differently
    (`me`): `message.edited`, `message.pinned`, `message.unpinned`. Like
    `room.updated`, each connection reads it from the stream as its user sees
    it; these are rare, unlike `message.new` (no reactions yet: encoded once).
    `payload` (the acting user's view) is what subscribers get."""
    return Event.of(payload, room_id=payload["room_id"], pos=payload["pos"], per_viewer=True)


def reaction(
    kind: str,
    room_id: int,
    pos: int,
    *,
    message_id: int,
    seq: int,
    emoji: str,
    user_id: int,
    count: int,
) -> dict[str, Any]:
    """`reaction.added` or `reaction.removed`; `count` is the emoji's count after it."""
    return {
        "type": kind,
        "room_id": room_id,
        "pos": pos,
        "message_id": message_id,
        "seq": seq,
        "emoji": emoji,
        "user_id": user_id,
        "count": count,
    }


def member_joined(
    room_id: int, pos: int, user: dict[str, Any], role: str | None, by: int | None
) -> dict[str, Any]:
    return {
        "type": "member.joined",
        "room_id": room_id,
        "pos": pos,
        "user": user,
        "role": role,
        "by": by,
    }


def member_left(room_id: int, pos: int, user: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {"type": "member.left", "room_id": room_id, "pos": pos, "user": user, "reason": reason}


def member_role(room_id: int, pos: int, user: dict[str, Any], role: str | None) -> dict[str, Any]:
    return {"type": "member.role", "room_id": room_id, "pos": pos, "user": user, "role": role}


def room_updated(room: dict[str, Any], pos: int) -> dict[str, Any]:
    """`room.updated` with the room as one member sees it."""
    return {"type": "room.updated", "room_id": room["id"], "pos": pos, "room": room}


def room_updated_event(room_id: int, pos: int) -> Event:
    """`room.updated` for the room's connections: each reads the room as its user sees it."""
    return Event.of(
        {"type": "room.updated", "room_id": room_id, "pos": pos},
        room_id=room_id,
        pos=pos,
        per_viewer=True,
    )


# --- other events ----------------------------------------------------------------------


def typing(room_id: int, user_id: int) -> Event:
    """To the room's other members: the user is typing."""
    return Event.of(
        {"type": "typing", "room_id": room_id, "user_id": user_id},
        room_id=room_id,
        exclude_user=user_id,
    )


def read(room_id: int, user_id: int, seq: int) -> Event:
    """To the room: the user's read marker moved to `seq`."""
    return Event.of(
        {"type": "read", "room_id": room_id, "user_id": user_id, "seq": seq}, room_id=room_id
    )


def report_new(report: dict[str, Any], admin_ids: tuple[int, ...]) -> Event:
    """To the admins' connections: a message was reported."""
    return Event.of({"type": "report.new", "report": report}, user_ids=admin_ids)


def notify(user_id: int, room_id: int, settings: dict[str, Any]) -> Event:
    """To the user's connections (on every process): their notification `settings`
    for the room ({level, muted_until}) changed. Changes come over REST, from no
    connection of theirs, so every one of them hears it."""
    return Event.of({"type": "notify", "room_id": room_id, **settings}, user_ids=(user_id,))


# --- frames for one connection (text) -------------------------------------------------


def ready(user: User, positions: dict[int, tuple[int, int]]) -> str:
    """`positions`: {room_id: (last_seq, last_pos)} of the user's rooms."""
    rooms = [
        {"room_id": room_id, "last_seq": seq, "last_pos": pos}
        for room_id, (seq, pos) in sorted(positions.items())
    ]
    return dumps({"type": "ready", "user": user.to_json(), "rooms": rooms})


def room_added(room: Room) -> str:
    """The connection's user joined, created or was added to `room` (as they see it)."""
    return dumps({"type": "room.added", "room": room.to_json()})


def room_removed(room: Room) -> str:
    """The connection's user left or was removed from `room` (as they see it now)."""
    return dumps({"type": "room.removed", "room": room.to_json()})


def resumed() -> str:
    return '{"type":"resumed"}'


def pong(ref: str | None) -> str:
    return dumps({"type": "pong"} if ref is None else {"type": "pong", "ref": ref})


def ack(ref: str | None, message_text: str) -> str:
    """The sender's `ack`: `message_text` is the committed message's JSON, spliced in as is."""
    ref_field = "" if ref is None else f'"ref":{dumps(ref)},'
    return f'{{"type":"ack",{ref_field}"message":{message_text}}}'


def ack_result(ref: str | None, result: dict[str, Any]) -> str:
    """The `ack` of a frame other than `send`: its outcome in `result`."""
    frame: dict[str, Any] = {"type": "ack", "result": result}
    if ref is not None:
        frame["ref"] = ref
    return dumps(frame)


def error(err: ApiError, ref: str | None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if ref is not None:
        frame["ref"] = ref
    if err.details is not None:
        frame["details"] = err.details
    return dumps(frame)


def gap(room_id: int, from_pos: int, to_pos: int) -> str:
    """Room events `from_pos`..`to_pos` will not be replayed: page them over REST."""
    return dumps({"type": "gap", "room_id": room_id, "from_pos": from_pos, "to_pos": to_pos})


def presence(user_id: int, status: str) -> str:
    """A room-mate came online or went offline (`status`: "online" | "offline")."""
    return dumps({"type": "presence", "user_id": user_id, "status": status})
