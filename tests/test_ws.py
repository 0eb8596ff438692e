"""The WebSocket protocol (API.md "WebSocket") over real sockets, on both engines."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestServer

from chat_server import Config, create_app, keys
from chat_server.config import Rate

from .helpers import PASSWORD, create_room, join, make_config, send, signup
from .helpers.ws import WS, assert_silent, connect, messages_until, next_of, receive


async def test_ready_via_header_and_via_auth_frame(client, alice):
    room = await create_room(client, alice)
    await send(client, alice, room, "one")
    for via_frame in (False, True):
        ws = await connect(client, alice, via_frame=via_frame)
        assert ws.ready["user"]["id"] == alice.id
        assert ws.ready["rooms"] == [{"room_id": room["id"], "last_seq": 1, "last_pos": 2}]
        await ws.send_json({"type": "ping", "ref": "p1"})
        assert await next_of(ws, "pong") == {"type": "pong", "ref": "p1"}
        await ws.close()


async def test_refused_before_the_upgrade(client, alice):
    for headers, status in [
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": "Basic YTpi"}, 401),
        ({"Authorization": alice.headers["Authorization"], "Origin": "https://evil.example"}, 403),
        ({"Origin": "https://evil.example"}, 403),
    ]:
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect(WS, headers=headers)
        assert info.value.status == status, headers
    own = f"http://{client.host}:{client.port}"
    ws = await client.ws_connect(WS, headers={**alice.headers, "Origin": own})
    assert (await next_of(ws, "ready"))["user"]["id"] == alice.id
    await ws.close()


async def test_allowed_origins(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, allowed_origins=("https://chat.example",))
    client = await aiohttp_client(create_app(config))
    alice = await signup(client, "alice")
    ws = await client.ws_connect(WS, headers={**alice.headers, "Origin": "https://chat.example"})
    await next_of(ws, "ready")
    await ws.close()


async def test_bad_auth_frame_closes(client, alice):
    ws = await client.ws_connect(WS)
    await ws.send_json({"type": "auth", "token": alice.refresh_token})
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == "unauthorized"
    closing = await ws.receive()
    assert closing.type == WSMsgType.CLOSE and closing.data == WSCloseCode.POLICY_VIOLATION
    ws = await client.ws_connect(WS)
    await ws.send_str("not json")  # anything but an auth frame before authenticating
    assert (await receive(ws))["code"] == "unauthorized"


async def test_send_ack_and_fanout_to_every_connection(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    alice_a, alice_b, bob_ws = [await connect(client, a) for a in (alice, alice, bob)]
    await alice_a.send_json({"type": "send", "room_id": room["id"], "body": "hi", "ref": "r1"})
    ack = await next_of(alice_a, "ack")
    assert ack["ref"] == "r1" and ack["message"]["seq"] == 1 and ack["message"]["body"] == "hi"
    for ws in (alice_a, alice_b, bob_ws):
        assert (await next_of(ws, "message.new"))["message"] == ack["message"]


async def test_concurrent_senders_give_every_connection_one_ordered_run(client, alice):
    senders = [alice] + [await signup(client, f"sender{i}") for i in range(3)]
    watcher = await signup(client, "watcher")
    room = await create_room(client, alice)
    for account in [*senders[1:], watcher]:
        await join(client, account, room)
    sockets = [await connect(client, a) for a in [*senders, watcher]]
    per_sender = 100

    async def flood(ws, index):
        for n in range(per_sender):
            await ws.send_json(
                {"type": "send", "room_id": room["id"], "body": f"{index}:{n}", "client_id": f"{n}"}
            )

    receivers = [asyncio.create_task(messages_until(ws, 4 * per_sender, 60)) for ws in sockets]
    await asyncio.gather(*(flood(ws, i) for i, ws in enumerate(sockets[:4])))
    runs = await asyncio.gather(*receivers)
    for run in runs:
        assert [m["seq"] for m in run] == list(range(1, 4 * per_sender + 1))
    history = []
    path = f"/api/v1/rooms/{room['id']}/messages?limit=100"
    cursor = ""
    while True:
        page = await (await client.get(path + cursor, headers=alice.headers)).json()
        history = page["items"] + history
        if not page["has_more"]:
            break
        cursor = f"&before_seq={page['items'][0]['seq']}"
    assert [m["id"] for m in history] == [m["id"] for m in runs[0]]
    for index in range(4):  # each sender's own messages in the order it sent them
        bodies = [m["body"] for m in runs[-1] if m["body"].startswith(f"{index}:")]
        assert bodies == [f"{index}:{n}" for n in range(per_sender)]


async def test_resume_replays_what_was_missed(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    await send(client, alice, room, "before")
    ws = await connect(client, bob)
    await ws.close()
    for i in range(50):
        await send(client, alice, room, f"missed {i}")
    ws = await connect(client, bob)
    # pos 1 and 2: the members' joins; message seq n is at pos n + 2
    assert ws.ready["rooms"] == [{"room_id": room["id"], "last_seq": 51, "last_pos": 53}]
    await ws.send_json({"type": "resume", "rooms": {str(room["id"]): 3}})
    replayed = await messages_until(ws, 50)
    assert [m["seq"] for m in replayed] == list(range(2, 52))
    assert (await receive(ws))["type"] == "resumed"
    await send(client, alice, room, "live")
    assert (await next_of(ws, "message.new"))["message"]["seq"] == 52


async def test_resume_in_the_auth_frame_and_a_gap_beyond_500(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    for i in range(600):
        await send(client, alice, room, f"m{i}")
    ws = await connect(client, bob, via_frame=True, rooms={room["id"]: 0})
    gap = await next_of(ws, "gap")  # the two joins and messages 1-100 (pos 3-102)
    assert gap == {"type": "gap", "room_id": room["id"], "from_pos": 1, "to_pos": 102}
    replayed = await messages_until(ws, 500)
    assert [m["seq"] for m in replayed] == list(range(101, 601))
    assert (await receive(ws))["type"] == "resumed"


async def test_live_messages_wait_for_the_first_frame_or_the_hold(
    aiohttp_client, tmp_path, database_url
):
    hold = Config.ready_hold
    client = await aiohttp_client(create_app(make_config(tmp_path, database_url, ready_hold=hold)))
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    room = await create_room(client, alice)
    await join(client, bob, room)
    loop = asyncio.get_running_loop()
    silent = await connect(client, bob)
    silent_ready_at = loop.time()
    talking = await connect(client, bob)
    await send(client, alice, room, "held")
    await assert_silent(talking, "message.new", 0.3)
    await talking.send_json({"type": "ping"})  # the first frame ends the hold at once
    assert (await next_of(talking, "message.new"))["message"]["body"] == "held"
    assert (await next_of(silent, "message.new"))["message"]["body"] == "held"
    assert loop.time() - silent_ready_at > hold / 2  # the silent socket waited out the hold


async def test_resume_under_fire_crosses_the_boundary_exactly_once(
    aiohttp_client, tmp_path, database_url
):
    # The hold keeps live messages back until the resume comes: the default
    # hold, so that a loaded machine's delay cannot end it first.
    config = make_config(tmp_path, database_url, ready_hold=Config.ready_hold)
    client = await aiohttp_client(create_app(config))
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    room = await create_room(client, alice)
    await join(client, bob, room)
    total = 150
    stop_at_reconnect = asyncio.Event()

    async def keep_sending():
        for i in range(total):
            await send(client, alice, room, f"m{i}")
            if i == 40:
                stop_at_reconnect.set()
            await asyncio.sleep(0)

    seen = []
    first = await connect(client, bob)
    sender = asyncio.create_task(keep_sending())
    await stop_at_reconnect.wait()
    seen += await messages_until(first, 10)
    await first.close()
    last_seen = seen[-1]["seq"]
    second = await connect(client, bob)
    last_seen_pos = last_seen + 2  # after the two members' joins
    await second.send_json({"type": "resume", "rooms": {str(room["id"]): last_seen_pos}})
    seen += await messages_until(second, total - last_seen, 60)
    await sender
    assert [m["seq"] for m in seen] == list(range(1, total + 1))
    await assert_silent(second, "message.new")


async def test_retried_client_id_acks_the_original_without_a_second_event(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    alice_ws, bob_ws = await connect(client, alice), await connect(client, bob)
    frame = {"type": "send", "room_id": room["id"], "body": "once", "client_id": "k1"}
    await alice_ws.send_json(frame | {"ref": "a"})
    first = await next_of(alice_ws, "ack")
    await alice_ws.send_json(frame | {"ref": "b", "body": "changed"})
    second = await next_of(alice_ws, "ack")
    assert second["ref"] == "b" and second["message"] == first["message"]
    assert (await next_of(bob_ws, "message.new"))["message"]["id"] == first["message"]["id"]
    await assert_silent(bob_ws, "message.new")


async def test_authorization_over_the_socket(client, alice, bob):
    private = await create_room(client, alice, name="secret", kind="private")
    public = await create_room(client, alice, name="open")
    ws = await connect(client, bob)
    checks = [
        ({"type": "send", "room_id": private["id"], "body": "x"}, "not_found"),
        ({"type": "send", "room_id": public["id"], "body": "x"}, "forbidden"),
        ({"type": "send", "room_id": 99999, "body": "x"}, "not_found"),
        ({"type": "typing", "room_id": private["id"]}, "not_found"),
        ({"type": "read", "room_id": private["id"], "seq": 1}, "not_found"),
    ]
    for frame, code in checks:
        await ws.send_json(frame | {"ref": "x"})
        error = await next_of(ws, "error")
        assert (error["code"], error["ref"]) == (code, "x"), frame
    await send(client, alice, private, "secret words")
    await ws.send_json({"type": "resume", "rooms": {str(private["id"]): 0}})
    assert (await receive(ws))["type"] == "resumed"  # nothing replayed from a room bob is not in


async def test_bad_frames_get_errors_and_the_connection_survives(client, alice):
    room = await create_room(client, alice)
    ws = await connect(client, alice)
    bad = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "teleport"}),
        json.dumps({"no": "type"}),
        json.dumps({"type": "send", "room_id": "1", "body": "x"}),
        json.dumps({"type": "send", "room_id": room["id"], "body": 7}),
        json.dumps({"type": "send", "room_id": 2**70, "body": "x"}),
        json.dumps({"type": "read", "room_id": room["id"], "seq": -5}),
        json.dumps({"type": "resume", "rooms": [1]}),
        json.dumps({"type": "resume", "rooms": {"x": 1}}),
        json.dumps({"type": "ping", "ref": {"deep": True}}),
        "[" * 10000 + "]" * 10000,
        '{"type": "send", "room_id": 1, "body": "\\ud800"}',
    ]
    for text in bad:
        await ws.send_str(text)
        error = await next_of(ws, "error")
        assert error["code"] == "invalid_request", text
    await ws.send_bytes(b"\x00\x01")
    assert (await next_of(ws, "error"))["code"] == "invalid_request"
    await ws.send_json({"type": "send", "room_id": room["id"], "body": "still fine", "ref": "ok"})
    assert (await next_of(ws, "ack"))["ref"] == "ok"
    await ws.send_str("x" * (64 * 1024 + 1))
    closing = await ws.receive()
    while closing.type == WSMsgType.TEXT:  # the sent message's own message.new follows its ack
        closing = await ws.receive()
    assert closing.type == WSMsgType.CLOSE and closing.data == WSCloseCode.MESSAGE_TOO_BIG


async def test_revoked_session_is_disconnected(client, alice):
    ws = await connect(client, alice)
    assert (await client.post("/api/v1/auth/logout", headers=alice.headers)).status == 204
    closing = await ws.receive(timeout=5)
    assert closing.type == WSMsgType.CLOSE and closing.data == WSCloseCode.POLICY_VIOLATION
    with pytest.raises(WSServerHandshakeError) as info:
        await client.ws_connect(WS, headers=alice.headers)
    assert info.value.status == 401


async def test_password_change_disconnects_other_sessions(client, alice):
    login = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    other_token = (await login.json())["access_token"]
    other_ws = await client.ws_connect(WS, headers={"Authorization": f"Bearer {other_token}"})
    await next_of(other_ws, "ready")
    mine = await connect(client, alice)
    await client.post(
        "/api/v1/auth/password",
        json={"old_password": PASSWORD, "new_password": "a new password"},
        headers=alice.headers,
    )
    closing = await other_ws.receive(timeout=5)
    assert closing.type == WSMsgType.CLOSE
    await mine.send_json({"type": "ping"})
    assert (await next_of(mine, "pong"))["type"] == "pong"


async def test_membership_typing_read_and_presence_events(client, alice, bob):
    room = await create_room(client, alice)
    alice_ws = await connect(client, alice)
    bob_ws = await connect(client, bob)
    await join(client, bob, room)
    added = await next_of(bob_ws, "room.added")
    assert added["room"]["id"] == room["id"] and added["room"]["my_role"] == "member"
    joined = await next_of(alice_ws, "member.joined")
    assert joined["room_id"] == room["id"] and joined["user"]["id"] == bob.id
    await send(client, alice, room, "hello bob")  # bob now follows the room live
    assert (await next_of(bob_ws, "message.new"))["message"]["body"] == "hello bob"
    await bob_ws.send_json({"type": "typing", "room_id": room["id"]})
    assert await next_of(alice_ws, "typing") == {
        "type": "typing",
        "room_id": room["id"],
        "user_id": bob.id,
    }
    await bob_ws.send_json({"type": "read", "room_id": room["id"], "seq": 1})
    for ws in (alice_ws, bob_ws):
        assert (await next_of(ws, "read")) == {
            "type": "read",
            "room_id": room["id"],
            "user_id": bob.id,
            "seq": 1,
        }
    second_bob = await connect(client, bob)
    await second_bob.close()
    await bob_ws.close()
    offline = await next_of(alice_ws, "presence")
    assert offline == {"type": "presence", "user_id": bob.id, "status": "offline"}
    bob_again = await connect(client, bob)
    assert await next_of(alice_ws, "presence") == {
        "type": "presence",
        "user_id": bob.id,
        "status": "online",
    }
    await client.delete(f"/api/v1/rooms/{room['id']}/members/{bob.id}", headers=alice.headers)
    assert (await next_of(bob_again, "room.removed"))["room"]["id"] == room["id"]
    await send(client, alice, room, "after the kick")
    await assert_silent(bob_again, "message.new")


async def test_message_edits_and_deletes_are_announced(client, alice):
    room = await create_room(client, alice)
    ws = await connect(client, alice)
    message = await send(client, alice, room, "draft")
    path = f"/api/v1/rooms/{room['id']}/messages/{message['id']}"
    await client.patch(path, json={"body": "final"}, headers=alice.headers)
    assert (await next_of(ws, "message.edited"))["message"]["body"] == "final"
    await client.delete(path, headers=alice.headers)
    deleted = (await next_of(ws, "message.deleted"))["message"]
    assert deleted["deleted"] is True and deleted["body"] == "" and deleted["seq"] == 1


async def test_flooding_is_rate_limited_then_closed(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, message_rate=Rate(3, 60))
    client = await aiohttp_client(create_app(config))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    ws = await connect(client, alice)
    codes = []
    for i in range(20):
        await ws.send_json({"type": "send", "room_id": room["id"], "body": f"m{i}", "ref": str(i)})
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame["type"] in ("ack", "error"):
            codes.append(frame.get("code", "ack"))
    assert codes[:3] == ["ack"] * 3 and set(codes[3:]) == {"rate_limited"}
    assert msg.type == WSMsgType.CLOSE and msg.data == WSCloseCode.POLICY_VIOLATION
    response = await client.post(
        f"/api/v1/rooms/{room['id']}/messages", json={"body": "rest"}, headers=alice.headers
    )
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1


def _read_until_ready(sock: socket.socket) -> bytes:
    """Reads the HTTP 101 response and the `ready` frame; returns the frame bytes read."""
    sock.settimeout(10)
    greeting = b""
    while b'"type":"ready"' not in greeting:
        greeting += sock.recv(4096)
    return greeting.split(b"\r\n\r\n", 1)[1]


def _read_close_code(sock: socket.socket, buffer: bytes) -> int | None:
    """Reads raw server frames until a close frame; returns its code (None on EOF)."""
    sock.settimeout(10)
    while True:
        while len(buffer) >= 2:
            length, offset = buffer[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[offset : offset + length]
            buffer = buffer[offset + length :]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk


async def test_a_client_that_stops_reading_is_closed_with_1013(
    aiohttp_client, tmp_path, database_url
):
    config = make_config(tmp_path, database_url, ws_outbox_limit=8)
    client = await aiohttp_client(create_app(config))
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    room = await create_room(client, alice)
    await join(client, bob, room)
    # Bob's raw socket with a tiny receive buffer, never read during the flood.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.host, client.port))
    sock.sendall(
        (
            f"GET {WS} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {bob.access_token}\r\n\r\n"
        ).encode()
    )
    frames = await asyncio.to_thread(_read_until_ready, sock)
    # A first frame (masked with a zero key) ends the hold on live events.
    ping = b'{"type":"ping"}'
    sock.sendall(bytes([0x81, 0x80 | len(ping)]) + b"\0\0\0\0" + ping)
    watcher = await connect(client, alice)
    received: list[dict] = []
    progress = asyncio.Event()

    async def watch() -> None:
        while True:
            frame = await receive(watcher)
            if frame["type"] == "message.new":
                received.append(frame["message"])
                progress.set()

    async def watcher_has(count: int) -> None:
        while len(received) < count:
            progress.clear()
            await asyncio.wait_for(progress.wait(), 30)

    watching = asyncio.create_task(watch())
    hub = client.app[keys.HUB]
    body = "😀" * 4000  # 16 KB frames: fill the socket buffers quickly
    sent = 0
    while not all(c.closed for c in hub.by_user.get(bob.id, ())) and sent < 1000:
        await send(client, alice, room, body)
        sent += 1
        # The flood goes at the reader's pace, however slowly this machine runs
        # it: its own 8-frame outbox never fills, while Bob's does.
        await watcher_has(sent)
    code = await asyncio.to_thread(_read_close_code, sock, frames)
    sock.close()
    assert code == WSCloseCode.TRY_AGAIN_LATER
    assert bob.id not in client.app[keys.HUB].by_user
    # The well-behaved reader got everything, in order.
    watching.cancel()
    assert [m["seq"] for m in received] == list(range(1, sent + 1))


async def test_shutdown_closes_sockets_with_1001(config):
    server = TestServer(create_app(config))
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            server.make_url("/api/v1/auth/signup"),
            json={"username": "alice", "password": PASSWORD},
        ) as response:
            token = (await response.json())["access_token"]
        ws = await session.ws_connect(
            server.make_url(WS), headers={"Authorization": f"Bearer {token}"}
        )
        await next_of(ws, "ready")
        closing = asyncio.create_task(server.close())
        msg = await ws.receive(timeout=10)
        while msg.type == WSMsgType.TEXT:
            msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE and msg.data == WSCloseCode.GOING_AWAY
        await closing
