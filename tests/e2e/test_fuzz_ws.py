"""WebSocket fuzzing: hypothesis-generated frames against a real server process.

One fuzzed connection takes every generated frame (random JSON, wrong types,
huge numbers, deep nesting, odd Unicode and escaped lone surrogates, binary
frames, invalid UTF-8 in a text frame, frames over 64 KiB); after each frame a
`ping` with a `ref` marks the end of the answer. The server must answer only
with frames of the contract (an `error` carries a contract code, never
`internal`), close only with a contract close code for the frames that deserve
it (1009 over 64 KiB, 1007 for invalid UTF-8), never crash, and afterwards the
fuzzed connection and a second, separate one still ping/pong and send/ack.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import pytest
from aiohttp import WSMsgType
from hypothesis import strategies as st

from ..helpers import PASSWORD
from ..helpers.servers import ServerProcess, engine_env

pytestmark = pytest.mark.e2e

FRAMES_PER_ENGINE = 150  # x2 engines = 300 fuzzed frames, about 20 s in all
MAX_FRAME = 64 * 1024
CONTRACT_CODES = {
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "rate_limited",
    "unavailable",
}
SERVER_TYPES = {
    "ready",
    "resumed",
    "gap",
    "pong",
    "ack",
    "error",
    "message.new",
    "message.edited",
    "message.deleted",
    "member.joined",
    "member.left",
    "room.updated",
    "room.added",
    "room.removed",
    "typing",
    "read",
    "presence",
}
CLIENT_TYPES = ["send", "ping", "typing", "read", "resume", "auth"]


class Loop:
    """An event loop on a thread of its own, so sync hypothesis tests can drive async clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Harness:
    engine: str
    server: ServerProcess
    loop: Loop
    session: aiohttp.ClientSession
    token: str
    room_id: int
    fuzzed: Any = None  # the connection taking the fuzz
    steady: Any = None  # a second connection that must be unaffected
    frames: Counter = field(default_factory=Counter)
    closes: Counter = field(default_factory=Counter)
    replies: Counter = field(default_factory=Counter)
    seq: int = 0

    async def connect(self):
        ws = await self.session.ws_connect(
            self.server.url + "/api/v1/ws",
            headers={"Authorization": f"Bearer {self.token}"},
            max_msg_size=0,
        )
        ready = json.loads((await ws.receive(timeout=10)).data)
        assert ready["type"] == "ready", ready
        return ws


async def _start(server: ServerProcess) -> tuple[aiohttp.ClientSession, str, int]:
    session = aiohttp.ClientSession()
    async with session.post(
        server.url + "/api/v1/auth/signup", json={"username": "fuzzer", "password": PASSWORD}
    ) as response:
        assert response.status == 201, await response.text()
        token = (await response.json())["access_token"]
    async with session.post(
        server.url + "/api/v1/rooms",
        json={"name": "fuzz", "kind": "public"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 201, await response.text()
        room_id = (await response.json())["id"]
    return session, token, room_id


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Harness]:
    workdir: Path = tmp_path_factory.mktemp(f"wsfuzz-{request.param}")
    with engine_env(request.param, request, workdir / "data") as env:
        server = ServerProcess(env, workdir).start()
        loop = Loop()
        try:
            session, token, room_id = loop.run(_start(server))
            h = Harness(request.param, server, loop, session, token, room_id)
            h.fuzzed = loop.run(h.connect())
            h.steady = loop.run(h.connect())
            yield h
            loop.run(session.close())
        finally:
            loop.close()
            server.stop()


# --- strategies ------------------------------------------------------------------------

# Any code point, lone surrogates included (they reach the server as \\uXXXX escapes).
any_char = st.characters(codec=None, exclude_categories=())
odd_text = st.text(any_char, max_size=40)
huge_ints = st.sampled_from(
    [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()  # NaN and Infinity too: Python's json writes and reads them
    | odd_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def ids(draw) -> Any:
    return draw(st.sampled_from([1, 2]) | huge_ints | json_values)


@st.composite
def protocol_frames(draw) -> dict[str, Any]:
    """Frames shaped like the protocol's, with every field possibly of the wrong type."""
    frame: dict[str, Any] = {"type": draw(st.sampled_from(CLIENT_TYPES) | odd_text | json_values)}
    optional = {
        "room_id": ids(),
        "body": odd_text | json_values,
        "seq": ids(),
        "client_id": odd_text | json_values,
        "reply_to": ids(),
        "attachments": st.lists(ids(), max_size=3) | json_values,
        "rooms": st.dictionaries(odd_text | st.integers().map(str), ids(), max_size=3)
        | json_values,
        "ref": odd_text | json_values,
        "token": odd_text,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        frame[name] = draw(optional[name])
    return frame


def _encode(value: Any, ascii_only: bool) -> str:
    """JSON text; lone surrogates can only travel escaped."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text


def _nested(depth: int) -> str:
    return '{"type": "send", "room_id": 1, "body": ' + "[" * depth + "]" * depth + "}"


text_frames = st.one_of(
    st.builds(_encode, protocol_frames(), st.booleans()),
    st.builds(_encode, json_values, st.booleans()),
    st.text(st.characters(codec="utf-8"), max_size=200),  # not JSON at all
    st.integers(1, 30_000).map(_nested),  # deep nesting
    st.integers(1, 20_000).map(lambda n: '{"type": "read", "room_id": 1, "seq": ' + "9" * n + "}"),
).map(lambda text: ("text", text))
binary_frames = st.binary(max_size=300).map(lambda data: ("binary", data))
bad_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b'{"type": "ping", "ref": "\xed\xa0\x80"}']).map(
    lambda data: ("raw-text", data)
)
oversize = st.integers(MAX_FRAME + 1, MAX_FRAME + 4096).map(lambda n: ("text", "x" * n))
frames = st.one_of(text_frames, text_frames, text_frames, binary_frames, bad_utf8, oversize)


# --- the fuzz --------------------------------------------------------------------------


async def _send(ws, kind: str, payload: Any) -> None:
    if kind == "text":
        await ws.send_str(payload)
    elif kind == "binary":
        await ws.send_bytes(payload)
    else:  # a text frame whose bytes are not UTF-8, past aiohttp's own encoding
        await ws._writer.send_frame(payload, WSMsgType.TEXT)


def _expected_close(kind: str, payload: Any) -> set[int]:
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > MAX_FRAME:
        return {1009}
    if kind == "raw-text":
        return {1007}
    return set()


async def _fuzz_one(h: Harness, kind: str, payload: Any) -> None:
    if h.fuzzed.closed:
        h.fuzzed = await h.connect()
    ws = h.fuzzed
    h.seq += 1
    marker = f"sync-{h.seq}"
    allowed_close = _expected_close(kind, payload)
    await _send(ws, kind, payload)
    if not allowed_close:
        # A client that keeps writing after a frame the server closes on may get a
        # TCP reset instead of the close frame (see SECURITY.md / the report), so
        # the end marker follows only frames that keep the connection open.
        await ws.send_json({"type": "ping", "ref": marker})
    while True:
        msg = await ws.receive(timeout=15)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            code = msg.data if msg.type == WSMsgType.CLOSE else ws.close_code
            assert code in allowed_close, f"closed with {code} after {kind} {payload!r:.200}"
            h.closes[code] += 1
            return
        assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
        frame = json.loads(msg.data)
        assert frame.get("type") in SERVER_TYPES, frame
        h.replies[frame["type"]] += 1
        if frame["type"] == "error":
            assert frame["code"] in CONTRACT_CODES, (frame, payload)
            assert isinstance(frame["message"], str)
        if frame["type"] == "pong" and frame.get("ref") == marker:
            assert not allowed_close, f"not closed after {kind} of {len(payload)} bytes"
            return


# Hand-picked frames (each a contract row or a past bug), always sent before the random ones.
EDGE_FRAMES = [
    ("text", "x" * (MAX_FRAME + 1)),
    ("raw-text", b"\xff\xfe{"),
    ("binary", b"\x00\x01"),
    ("text", '{"type": "ping", "ref": "\\ud800"}'),
    ("text", '{"type": "nope", "ref": "\\udfff\\ud800"}'),
    ("text", '{"type": "send", "room_id": 1, "body": "\\ud800"}'),
    ("text", '{"type": "resume", "rooms": {"\\u00b2": 1}}'),
    ("text", '{"type": "resume", "rooms": {"99999999999999999999999": 1}}'),
    ("text", '{"type": "read", "room_id": 1, "seq": 1e400}'),
    ("text", '{"type": []}'),
    ("text", _nested(30_000)),
]


@pytest.mark.parametrize("frame", EDGE_FRAMES, ids=range(len(EDGE_FRAMES)))
def test_edge_frames_get_contract_answers(harness: Harness, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    harness.frames[kind] += 1
    harness.loop.run(_fuzz_one(harness, kind, payload))


@hypothesis.settings(
    max_examples=FRAMES_PER_ENGINE,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
@hypothesis.given(frame=frames)
def test_fuzzed_frames_get_contract_answers(harness: Harness, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    harness.frames[kind] += 1
    harness.loop.run(_fuzz_one(harness, kind, payload))


async def _still_works(h: Harness) -> None:
    if h.fuzzed.closed:
        h.fuzzed = await h.connect()
    for ws in (h.fuzzed, h.steady):
        await ws.send_json({"type": "ping", "ref": "alive"})
        client_id = secrets.token_hex(8)
        await ws.send_json(
            {"type": "send", "room_id": h.room_id, "body": "after the fuzz", "client_id": client_id}
        )
        got_pong = got_ack = False
        while not (got_pong and got_ack):
            msg = await ws.receive(timeout=15)
            assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
            frame = json.loads(msg.data)
            got_pong |= frame["type"] == "pong" and frame.get("ref") == "alive"
            if frame["type"] == "ack":
                got_ack |= frame["message"]["client_id"] == client_id
                assert frame["message"]["body"] == "after the fuzz"


def test_connections_still_work_after_the_fuzz(harness: Harness) -> None:
    fuzzed = sum(harness.frames.values())
    assert fuzzed >= FRAMES_PER_ENGINE // 2, harness.frames
    process = harness.server.process
    assert process is not None and process.poll() is None, "the server died during the fuzz"
    harness.loop.run(_still_works(harness))
    failures = [
        line
        for line in harness.server.logs().splitlines()
        if "unhandled error" in line or "frame failed" in line or "Error:" in line
    ]
    assert not failures, "server logged errors:\n" + "\n".join(failures[:20])
    print(
        f"{harness.engine}: {fuzzed} frames fuzzed {dict(harness.frames)}; "
        f"closes {dict(harness.closes)}; replies {dict(harness.replies)}"
    )
