"""WebSocket test helpers: connect, wait for frames of a type, and check frames
against the AsyncAPI document."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

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
# against its client frames. (conftest.py imports the two fixtures below.)

ASYNCAPI_PATH = Path(__file__).resolve().parent.parent / "chat_server" / "asyncapi.json"
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


@pytest.fixture(scope="session", autouse=True)
def received_frames_are_checked() -> Iterator[None]:
    """For the whole run, every client WebSocket checks the text frames it receives."""
    original = ClientWebSocketResponse.receive

    async def receive(self, timeout: float | None = None):
        msg = await original(self, timeout)
        if msg.type == WSMsgType.TEXT:
            check_server_frame(msg.data)
        return msg

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClientWebSocketResponse, "receive", receive)
        yield


@pytest.fixture(autouse=True)
def frames_match_asyncapi(
    received_frames_are_checked: None, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Fails a test during which a received frame did not match asyncapi.json
    (unless it is marked `raw_frames`: it sends frames of its own making)."""
    yield
    failures = FRAME_FAILURES[:]
    del FRAME_FAILURES[: len(failures)]
    if failures and request.node.get_closest_marker("raw_frames") is None:
        shown = "\n".join(failures)
        pytest.fail(f"received frames that do not match asyncapi.json:\n{shown}")
