"""WebSocket test helpers: connect, wait for frames of a type, record a socket's room
stream, and check frames against the AsyncAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Any

import jsonschema_rs
from aiohttp import WSMsgType

WS = "/api/v1/ws"


async def connect(client, account, *, rooms: dict | None = None, via_frame: bool = False):
    """An authenticated connection whose `ready` has been read (returned as ws.ready)."""
    if via_frame:
        ws = await client.ws_connect(WS)
        frame: dict[str, Any] = {"type": "auth", "token": account.access_token}
        if rooms is not None:
            frame["rooms"] = {str(k): v for k, v in rooms.items()}
        await send(ws, frame)
    else:
        ws = await client.ws_connect(WS, headers=account.headers)
    ws.ready = await next_of(ws, "ready")
    return ws


async def receive(ws, timeout: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    if msg.type != WSMsgType.TEXT:
        raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r} {msg.extra!r}")
    return json.loads(msg.data)


async def next_of(ws, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others (presence, typing, ...)."""
    while True:
        frame = await receive(ws, timeout)
        if frame["type"] == kind:
            return frame


async def messages_until(ws, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The next `count` message.new frames' messages, skipping other frames."""
    got: list[dict[str, Any]] = []

    async def gather() -> None:
        while len(got) < count:
            frame = await receive(ws, timeout)
            if frame["type"] == "message.new":
                got.append(frame["message"])

    await asyncio.wait_for(gather(), timeout)
    return got


async def assert_silent(ws, kind: str, wait: float = 0.3) -> None:
    """No frame of type `kind` arrives within `wait` seconds."""
    try:
        while True:
            frame = await receive(ws, wait)
            assert frame["type"] != kind, frame
    except TimeoutError:
        return


# --- every frame checked against chat_server/asyncapi.json ----------------------------
#
# Every text frame a test receives on an aiohttp client WebSocket (in-process or
# from a server subprocess, through these helpers or `ws.receive*` directly) is
# validated against the document's server frames; failures are collected and
# fail the test that received them. Frames sent with `send` are validated
# against its client frames. The fixtures that do it are in conftest.py.

ASYNCAPI_PATH = Path(__file__).resolve().parents[2] / "chat_server" / "asyncapi.json"
# Failures since the last check, appended from any thread or event loop; the
# first MAX_FRAME_FAILURES are kept (a broken schema fails every frame of a flood).
MAX_FRAME_FAILURES = 100
FRAME_FAILURES: list[str] = []


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The object a local `$ref` ("#/a/b") points to, following `$ref`s it holds."""
    node: Any = document
    for token in ref.removeprefix("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(document, node["$ref"])
    return node


class FrameSchemas:
    """The document's frame validators by direction ("client", "server") and `type`.

    A frame's direction follows the operations: messages of `receive`
    operations are client frames; those of `send` operations and of replies
    are server frames.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.components = document["components"]
        self.by_direction: dict[str, dict[str, Any]] = {"client": {}, "server": {}}
        for operation in document["operations"].values():
            direction = "server" if operation["action"] == "send" else "client"
            for ref in operation.get("messages", []):
                self._add(direction, resolve(document, ref["$ref"]))
            for ref in operation.get("reply", {}).get("messages", []):
                self._add("server", resolve(document, ref["$ref"]))

    def _add(self, direction: str, message: dict[str, Any]) -> None:
        # The payload's `$ref`s point into the document: validate against a
        # schema that carries its components.
        schema = {"allOf": [message["payload"]], "components": self.components}
        self.by_direction[direction][message["name"]] = jsonschema_rs.Draft202012Validator(schema)

    def errors(self, frame: Any, direction: str) -> list[str]:
        kind = frame.get("type") if isinstance(frame, dict) else None
        validator = self.by_direction[direction].get(kind) if isinstance(kind, str) else None
        if validator is None:
            return [f"no {direction} frame of type {kind!r} in asyncapi.json"]
        return [
            "/" + "/".join(map(str, error.instance_path)) + ": " + error.message
            for error in validator.iter_errors(frame)
        ]


@functools.cache
def frame_schemas() -> FrameSchemas:
    return FrameSchemas(json.loads(ASYNCAPI_PATH.read_text()))


def check_server_frame(text: str) -> None:
    """Record why a received text frame does not match asyncapi.json, if it does not."""
    try:
        errors = frame_schemas().errors(json.loads(text), "server")
    except ValueError:
        errors = ["a text frame that is not JSON"]
    for error in errors[: MAX_FRAME_FAILURES - len(FRAME_FAILURES)]:
        FRAME_FAILURES.append(f"{error}: {text[:500]}")


async def send(ws, frame: dict[str, Any]) -> None:
    """Send a client frame, which must match asyncapi.json's client frames."""
    errors = frame_schemas().errors(frame, "client")
    assert not errors, f"{frame} does not match asyncapi.json: {errors}"
    await ws.send_json(frame)


# --- the room stream (API.md "Room stream") ------------------------------------------

ROOM_EVENTS = frozenset(
    {
        "message.new",
        "message.edited",
        "message.deleted",
        "message.pinned",
        "message.unpinned",
        "reaction.added",
        "reaction.removed",
        "member.joined",
        "member.left",
        "member.role",
        "room.updated",
    }
)
MESSAGE_EVENTS = frozenset({"message.new", "message.edited", "message.deleted"})


def event_key(event: dict[str, Any]) -> tuple[int, str, int | None]:
    """What identifies a room event: its pos, its type and the id of what it is about."""
    subject = event.get("message") or event.get("user") or event.get("room") or {}
    return event["pos"], event["type"], subject.get("id", event.get("message_id"))


def fold_messages(events: list[dict[str, Any]]) -> dict[int, tuple[str, bool, str | None]]:
    """Each message's (body, deleted, edited_at) after applying `events` in pos order."""
    state: dict[int, tuple[str, bool, str | None]] = {}
    for event in sorted(events, key=lambda e: e["pos"]):
        if event["type"] in MESSAGE_EVENTS:
            message = event["message"]
            state[message["id"]] = (message["body"], message["deleted"], message["edited_at"])
    return state


def fold_members(events: list[dict[str, Any]]) -> set[int]:
    members: set[int] = set()
    for event in sorted(events, key=lambda e: e["pos"]):
        if event["type"] == "member.joined":
            members.add(event["user"]["id"])
        elif event["type"] == "member.left":
            members.discard(event["user"]["id"])
    return members


async def page_events(fetch, room_id: int, after_pos: int = 0) -> list[dict[str, Any]]:
    """Every event of a room after `after_pos`, paged from `GET /rooms/{id}/events`.

    `fetch(path)` returns the decoded JSON body of a 200 answer.
    """
    events: list[dict[str, Any]] = []
    while True:
        page = await fetch(f"/api/v1/rooms/{room_id}/events?after_pos={after_pos}&limit=100")
        events += page["items"]
        if not page["has_more"]:
            return events
        after_pos = page["items"][-1]["pos"]


class Recorder:
    """Reads one socket in the background and checks the stream's promises as frames
    arrive (API.md "WebSocket", delivery guarantee): per room, `pos` only grows, by 1
    unless a `gap` names the jump; nothing of a room after the user's own `member.left`
    until it joins again; no text of a message after its `message.deleted`.

    Broken promises are collected in `violations` (with the frame), not raised, so a
    test can report them all; `assert_clean()` fails with the list.
    """

    def __init__(
        self, ws, user_id: int, resumed: dict[int, int] | None = None, label: str = ""
    ) -> None:
        self.ws = ws
        self.user_id = user_id
        self.label = label or f"user {user_id}"
        self.frames: list[tuple[float, dict[str, Any]]] = []  # (arrival, frame)
        self.events: dict[int, list[dict[str, Any]]] = {}  # room -> its events, as delivered
        self.violations: list[str] = []
        rooms = ws.ready["rooms"]
        for room in rooms:
            assert "last_pos" in room, f"ready.rooms[] without last_pos: {room}"
        self.ready_pos = {r["room_id"]: r["last_pos"] for r in rooms}
        self.high: dict[int, int] = {}  # room -> highest pos delivered
        # With `rooms` in the auth frame (`resumed`), those rooms start at the given pos.
        start = self.ready_pos | {r: p for r, p in (resumed or {}).items() if r in self.ready_pos}
        self.expect: dict[int, int | None] = {r: p + 1 for r, p in start.items()}
        self.following = set(self.ready_pos)
        self.deleted: set[int] = set()
        self.closed = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_frame(json.loads(msg.data))
        finally:
            self.closed = True
            self._changed.set()

    def _violate(self, what: str, frame: dict[str, Any]) -> None:
        self.violations.append(f"{self.label}: {what}: {json.dumps(frame)[:300]}")

    def _on_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append((time.monotonic(), frame))
        kind = frame.get("type")
        if kind in ROOM_EVENTS:
            self._on_room_event(frame)
        elif kind == "gap":
            room_id, to_pos = frame["room_id"], frame["to_pos"]
            if not frame["from_pos"] <= to_pos:
                self._violate("empty gap", frame)
            self.expect[room_id] = max(self.expect.get(room_id) or 0, to_pos + 1)
        elif kind == "room.added":
            self.following.add(frame["room"]["id"])
        self._check_text(frame)
        self._changed.set()

    def _on_room_event(self, frame: dict[str, Any]) -> None:
        room_id, pos = frame["room_id"], frame.get("pos")
        if not isinstance(pos, int):
            self._violate("room event without an integer pos", frame)
            return
        own = frame.get("user", {}).get("id") == self.user_id
        if frame["type"] == "member.joined" and own:
            self.following.add(room_id)
        high, expect = self.high.get(room_id, 0), self.expect.get(room_id)
        if room_id not in self.following:
            self._violate("an event of a room not followed (after removal?)", frame)
            self.high[room_id] = max(high, pos)
            self.events.setdefault(room_id, []).append(frame)
            return
        if pos <= high:
            self._violate(f"pos {pos} after pos {high} (duplicate or rewind)", frame)
        elif expect is not None and pos != expect:
            self._violate(f"pos {pos} where {expect} was due (a hole)", frame)
        self.high[room_id] = max(high, pos)
        self.expect[room_id] = pos + 1
        self.events.setdefault(room_id, []).append(frame)
        if frame["type"] == "message.deleted":
            message = frame["message"]
            if message["body"] != "" or message["deleted"] is not True:
                self._violate("message.deleted that is no tombstone", frame)
            self.deleted.add(message["id"])
        if frame["type"] == "member.left" and own:
            self.following.discard(room_id)
            self.expect[room_id] = None  # a rejoin continues the stream further on

    def _check_text(self, frame: dict[str, Any]) -> None:
        message = frame.get("message")
        if isinstance(message, dict) and message.get("id") in self.deleted and message["body"]:
            self._violate("text of a message after its message.deleted", frame)

    # --- reading what arrived ---------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for _, frame in self.frames if frame.get("type") == kind]

    def room_events(self) -> list[dict[str, Any]]:
        return [frame for _, frame in self.frames if frame.get("type") in ROOM_EVENTS]

    def reached(self, room_id: int, pos: int) -> bool:
        """Whether the connection stands at `pos` or later: its newest delivered event,
        or, before any, where `ready` (or the resume) put it."""
        if room_id in self.high:
            return self.high[room_id] >= pos
        start = self.expect.get(room_id)
        return start is not None and start - 1 >= pos

    def has(self, kind: str, **fields: Any) -> bool:
        return any(all(f.get(k) == v for k, v in fields.items()) for f in self.of_type(kind))

    def has_message(self, message_id: int) -> bool:
        """Whether the message's `message.new` arrived."""
        return any(f["message"]["id"] == message_id for f in self.of_type("message.new"))

    def text(self) -> str:
        return "\n".join(json.dumps(frame, ensure_ascii=False) for _, frame in self.frames)

    async def wait_for(self, predicate, timeout: float = 10.0, what: str = "") -> None:
        """Until `predicate(self)` holds; an AssertionError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                recent = [frame.get("type") for _, frame in self.frames[-8:]]
                raise AssertionError(
                    f"{self.label}: not {what or 'reached'} within {timeout} s"
                    f" (closed={self.closed}, last frames {recent}); violations: {self.violations}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_pos(self, room_id: int, pos: int, timeout: float = 10.0) -> None:
        await self.wait_for(
            lambda r: r.reached(room_id, pos), timeout, f"at pos {pos} of {room_id}"
        )

    async def live(self) -> Recorder:
        """Ends the connection's hold (a first frame after `ready`) and waits for its answer."""
        pongs = len(self.of_type("pong"))
        await self.ws.send_json({"type": "ping"})
        await self.wait_for(lambda r: len(r.of_type("pong")) > pongs, what="answered a ping")
        return self

    async def resume(self, rooms: dict[int, int], timeout: float = 10.0) -> None:
        """Sends `resume` and waits for `resumed`; the start of rooms nothing was delivered
        of yet moves back to the given pos."""
        for room_id, pos in rooms.items():
            if room_id in self.following and room_id not in self.high:
                self.expect[room_id] = pos + 1
        done = len(self.of_type("resumed"))
        await self.ws.send_json({"type": "resume", "rooms": {str(k): v for k, v in rooms.items()}})
        await self.wait_for(lambda r: len(r.of_type("resumed")) > done, timeout, "resumed")

    async def close(self) -> None:
        await self.ws.close()
        await self.task

    def assert_clean(self) -> None:
        assert not self.violations, "\n".join(self.violations)
