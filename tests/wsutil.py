"""WebSocket test helpers: connect, and wait for frames of a type."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType

WS = "/api/v1/ws"


async def connect(client, account, *, rooms: dict | None = None, via_frame: bool = False):
    """An authenticated connection whose `ready` has been read (returned as ws.ready)."""
    if via_frame:
        ws = await client.ws_connect(WS)
        frame: dict[str, Any] = {"type": "auth", "token": account.access_token}
        if rooms is not None:
            frame["rooms"] = {str(k): v for k, v in rooms.items()}
        await ws.send_json(frame)
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
