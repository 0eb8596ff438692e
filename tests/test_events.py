"""The wire vocabulary (events.py): frame encoding and the frames built from parts."""

from __future__ import annotations

import json
import struct

import pytest
from aiohttp import WSMsgType, web

from chat_server import events
from chat_server.errors import InvalidRequest
from chat_server.models import Message
from chat_server.realtime.relay import Joined, Published, decode, encode

# Payload sizes in bytes around each of RFC 6455's three length encodings.
BOUNDARY_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def _text_of(size: int) -> str:
    """A text of exactly `size` UTF-8 bytes, mostly two-byte characters."""
    return "é" * (size // 2) + "x" * (size % 2)


def _hand_decode(frame: bytes) -> tuple[int, int, bytes]:
    """(first byte, header length, payload) of an unmasked frame, per RFC 6455 5.2."""
    first, second = frame[0], frame[1]
    assert second & 0x80 == 0, "a server's frames are not masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        header = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", frame[2:10])
        header = 10
    else:
        header = 2
    assert len(frame) == header + length
    return first, header, frame[header:]


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_text_frame_header_at_the_length_boundaries(size):
    text = _text_of(size)
    first, header, payload = _hand_decode(events.text_frame(text))
    assert first == 0x81  # FIN, text
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)
    assert payload.decode() == text


@pytest.mark.raw_frames
async def test_aiohttp_reads_our_frames_written_raw_to_the_transport(aiohttp_client):
    texts = [_text_of(size) for size in BOUNDARY_SIZES]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        request.transport.write(b"".join(events.text_frame(text) for text in texts))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/")
    for text in texts:
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.TEXT
        assert msg.data == text
    await ws.close()


def _message(body: str = 'say "hi"\n😀') -> Message:
    return Message(7, 3, 42, 1, body, "c-1", None, 1_700_000_000_000, None, False, 44)


@pytest.mark.parametrize("kind", ["message.new", "message.edited", "message.deleted"])
def test_message_event_splices_valid_json(kind):
    message = _message()
    as_json = message.to_json()
    for event in (
        events.message_event(kind, message, 45),
        events.message_event(kind, message, 45, (as_json, events.dumps(as_json))),
    ):
        expected = {"type": kind, "room_id": 3, "pos": 45, "message": as_json}
        assert json.loads(event.frame) == expected
        assert event.frame == events.dumps(event.payload)
        assert event.wire == events.text_frame(event.frame)
        assert (event.room_id, event.pos) == (3, 45)


def test_ack_error_and_pong_carry_the_ref_only_when_given():
    text = events.dumps(_message().to_json())
    assert json.loads(events.ack(None, text)) == {"type": "ack", "message": json.loads(text)}
    assert json.loads(events.ack('r"1', text))["ref"] == 'r"1'
    assert events.pong(None) == '{"type":"pong"}'
    assert json.loads(events.pong("p")) == {"type": "pong", "ref": "p"}
    error = InvalidRequest.fields({"body": "required"})
    assert json.loads(events.error(error, "e")) == {
        "type": "error",
        "code": error.code,
        "message": error.message,
        "ref": "e",
        "details": error.details,
    }
    assert "ref" not in json.loads(events.error(error, None))


def test_the_relay_carries_the_frame_text_as_is():
    event = events.message_event("message.new", _message("line one\nline two\u2028"), 44)
    node, ts, relayed = decode(encode("node-a", Published(event), 12.5).encode())
    assert (node, ts) == ("node-a", 12.5)
    assert isinstance(relayed, Published)
    assert relayed.event == event  # the same frame text and targets
    assert relayed.event.wire == event.wire
    assert relayed.event.as_object() == event.payload
    node, _, joined = decode(encode("node-b", Joined(1, 2, 3), 0.0).encode())
    assert (node, joined) == ("node-b", Joined(1, 2, 3))
