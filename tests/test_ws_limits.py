"""WebSocket limits found by outside checks (authentication window, frame size,
unauthenticated sockets per address) and the order of a sender's own frames."""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSCloseCode, WSMsgType, WSServerHandshakeError

from chat_server import create_app
from chat_server.realtime.ws import MAX_FRAME_BYTES, MAX_UNAUTHENTICATED_PER_IP

from .helpers import create_room, make_config
from .helpers.ws import WS, connect, next_of, receive


async def test_pings_do_not_extend_the_authentication_window(
    aiohttp_client, tmp_path, database_url
):
    config = make_config(tmp_path, database_url, auth_timeout=0.5)
    client = await aiohttp_client(create_app(config))
    ws = await client.ws_connect(WS, autoping=False)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    while True:  # a client that only pings, more often than the deadline
        await ws.ping()
        msg = await ws.receive(timeout=5)
        if msg.type == WSMsgType.PONG:
            await asyncio.sleep(0.1)
            continue
        break
    assert msg.type == WSMsgType.CLOSE and msg.data == WSCloseCode.POLICY_VIOLATION
    assert loop.time() - opened < 2.0  # closed at the deadline, not kept open by pings


async def test_any_frame_before_auth_is_unauthorized(client):
    for frame in ({"type": "ping"}, {"type": "send", "room_id": 1, "body": "x"}, [1, 2]):
        ws = await client.ws_connect(WS)
        await ws.send_str(json.dumps(frame))
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "unauthorized"), frame
        closing = await ws.receive()
        assert closing.type == WSMsgType.CLOSE
    ws = await client.ws_connect(WS)
    await ws.send_json({"type": "auth"})  # an auth frame without its token: a bad field
    assert (await receive(ws))["code"] == "invalid_request"


async def test_unauthenticated_sockets_per_address_are_capped(client, alice):
    waiting = [await client.ws_connect(WS) for _ in range(MAX_UNAUTHENTICATED_PER_IP)]
    try:
        try:
            await client.ws_connect(WS)
        except WSServerHandshakeError as refused:
            assert refused.status == 429
        else:
            raise AssertionError("one socket too many was accepted")
        ws = await connect(client, alice)  # authenticated by header: not counted
        await ws.close()
    finally:
        for ws in waiting:
            await ws.close()
    ws = await client.ws_connect(WS)  # the count goes down as sockets go away
    await ws.close()


async def test_a_frame_of_exactly_64_kib_is_allowed(client, alice):
    ws = await connect(client, alice)
    padding = MAX_FRAME_BYTES - len(json.dumps({"type": "ping", "ref": ""}))
    frame = json.dumps({"type": "ping", "ref": "x" * padding})
    assert len(frame.encode()) == MAX_FRAME_BYTES == 65536
    await ws.send_str(frame)
    answer = await receive(ws)  # a ref this long is refused, but the socket stays open
    assert answer["type"] == "error" and answer["code"] == "invalid_request"
    await ws.send_str(frame + " ")
    closing = await ws.receive()
    assert closing.type == WSMsgType.CLOSE and closing.data == WSCloseCode.MESSAGE_TOO_BIG


async def test_a_senders_ack_comes_before_its_own_message(client, alice):
    room = await create_room(client, alice)
    ws = await connect(client, alice)
    await ws.send_json({"type": "ping"})  # ends the hold: live events flow from here
    await next_of(ws, "pong")
    for n in range(20):
        await ws.send_json({"type": "send", "room_id": room["id"], "body": f"m{n}", "ref": str(n)})
        first = await receive(ws)
        while first["type"] not in ("ack", "message.new"):
            first = await receive(ws)
        assert first["type"] == "ack" and first["ref"] == str(n), first
        echo = await next_of(ws, "message.new")
        assert echo["message"]["id"] == first["message"]["id"]
