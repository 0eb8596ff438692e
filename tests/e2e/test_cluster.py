"""Several processes as one server: two `python run.py` on one PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from aiohttp import WSMsgType

from ..helpers import PASSWORD
from ..helpers.cluster import Node, start_nodes
from ..helpers.servers import RedisProcess
from ..helpers.ws import assert_silent, messages_until, next_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def shared_redis_url() -> str:
    """The machine's Redis, on a database number of this test's own."""
    return f"redis://127.0.0.1:6379/{secrets.randbelow(15) + 1}"


async def _room_with(node: Node, owner: dict, members: list[dict], nodes: list[Node]) -> int:
    status, room = await node.call(
        "POST", "/api/v1/rooms", owner["access_token"], json={"name": "cluster", "kind": "public"}
    )
    assert status == 201
    for i, member in enumerate(members):
        status, _ = await nodes[i % len(nodes)].call(
            "POST", f"/api/v1/rooms/{room['id']}/join", member["access_token"]
        )
        assert status == 200
    return room["id"]


async def test_two_nodes_act_as_one(tmp_path, cluster_db, shared_redis_url, session):
    servers = start_nodes(tmp_path, cluster_db, shared_redis_url)
    try:
        one, two = Node(session, servers[0]), Node(session, servers[1])
        alice, bob = await one.signup("alice"), await two.signup("bob")
        room_id = await _room_with(one, alice, [bob], [two])
        alice_ws, bob_ws = await one.ws(alice["access_token"]), await two.ws(bob["access_token"])
        bob_on_one = await one.ws(bob["access_token"])
        per_sender = 100

        async def flood(ws, name):
            for n in range(per_sender):
                await ws.send_json({"type": "send", "room_id": room_id, "body": f"{name}{n}"})

        receivers = [
            asyncio.create_task(messages_until(ws, 2 * per_sender, 60))
            for ws in (alice_ws, bob_ws, bob_on_one)
        ]
        await asyncio.gather(flood(alice_ws, "a"), flood(bob_ws, "b"))
        runs = await asyncio.gather(*receivers)
        for run in runs:  # one contiguous seq across both nodes, no gap, no duplicate
            assert [m["seq"] for m in run] == list(range(1, 2 * per_sender + 1))
        assert [m["id"] for m in runs[0]] == [m["id"] for m in runs[1]]

        # Typing and presence travel too; a user on two nodes is online once.
        await bob_ws.send_json({"type": "typing", "room_id": room_id})
        assert (await next_of(alice_ws, "typing"))["user_id"] == bob["user"]["id"]
        await bob_on_one.close()
        await assert_silent(alice_ws, "presence", 0.5)
        await bob_ws.close()
        offline = await next_of(alice_ws, "presence")
        assert offline == {"type": "presence", "user_id": bob["user"]["id"], "status": "offline"}

        # Logout on node one is refused on node two at once, and its sockets close.
        bob_ws = await two.ws(bob["access_token"])
        status, _ = await one.call("POST", "/api/v1/auth/logout", bob["access_token"])
        assert status == 204
        status, body = await two.call("GET", "/api/v1/users/me", bob["access_token"])
        assert status == 401 and body["error"]["code"] == "unauthorized"
        closing = await bob_ws.receive(timeout=5)
        while closing.type == WSMsgType.TEXT:  # presence of room-mates may come first
            closing = await bob_ws.receive(timeout=5)
        assert closing.type == WSMsgType.CLOSE
    finally:
        for server in servers:
            server.stop()


async def test_rate_limits_are_shared(tmp_path, cluster_db, shared_redis_url, session):
    servers = start_nodes(tmp_path, cluster_db, shared_redis_url, CHAT_AUTH_RATE="3/60")
    try:
        one, two = Node(session, servers[0]), Node(session, servers[1])
        await one.signup("alice")  # one of the username's three attempts
        login = {"username": "alice", "password": "wrong password"}
        assert (await two.call("POST", "/api/v1/auth/login", json=login))[0] == 401
        assert (await one.call("POST", "/api/v1/auth/login", json=login))[0] == 401
        status, body = await two.call("POST", "/api/v1/auth/login", json=login)
        assert status == 429 and body["error"]["code"] == "rate_limited"
    finally:
        for server in servers:
            server.stop()


async def test_redis_outage_loses_nothing(tmp_path, cluster_db, session):
    redis_server = RedisProcess(tmp_path).start()
    servers = start_nodes(tmp_path, cluster_db, redis_server.url)
    try:
        one, two = Node(session, servers[0]), Node(session, servers[1])
        alice, bob = await one.signup("alice"), await two.signup("bob")
        room_id = await _room_with(one, alice, [bob], [two])
        bob_ws = await two.ws(bob["access_token"])
        received = asyncio.create_task(messages_until(bob_ws, 90, 60))

        async def send_some(start: int, count: int) -> None:
            for n in range(start, start + count):
                status, _ = await one.call(
                    "POST",
                    f"/api/v1/rooms/{room_id}/messages",
                    alice["access_token"],
                    json={"body": f"m{n}", "client_id": f"c{n}"},
                )
                assert status == 201
                await asyncio.sleep(0.05)

        await send_some(0, 30)
        redis_server.stop()
        outage = asyncio.create_task(asyncio.sleep(10))
        await send_some(30, 30)
        status, body = await two.call("GET", "/readyz")
        assert status == 503 and body["error"]["code"] == "unavailable"
        await outage
        redis_server.start()
        await send_some(60, 30)
        run = await received
        assert [m["seq"] for m in run] == list(range(1, 91))
        assert [m["body"] for m in run] == [f"m{n}" for n in range(90)]
        await assert_silent(bob_ws, "message.new", 1.0)
        for _ in range(50):  # the relay reconnects by itself
            if (await two.call("GET", "/readyz"))[0] == 200:
                break
            await asyncio.sleep(0.2)
        assert (await two.call("GET", "/readyz"))[0] == 200
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()


async def test_metrics_and_json_logs_hold_no_secrets(
    tmp_path, cluster_db, shared_redis_url, session
):
    (server,) = start_nodes(tmp_path, cluster_db, shared_redis_url, count=1, CHAT_LOG_FORMAT="json")
    try:
        node = Node(session, server)
        alice = await node.signup("alice")
        secret_body = "very-private-message-" + secrets.token_hex(8)
        room_id = await _room_with(node, alice, [], [node])
        status, _ = await node.call(
            "POST",
            f"/api/v1/rooms/{room_id}/messages",
            alice["access_token"],
            json={"body": secret_body},
        )
        assert status == 201
        await node.call(
            "POST", "/api/v1/auth/login", json={"username": "alice", "password": "nope nope"}
        )
        async with session.get(
            server.url + "/api/v1/users/me",
            headers={
                "Authorization": f"Bearer {alice['access_token']}",
                "X-Request-ID": "trace-123",
            },
        ) as response:
            assert response.headers["X-Request-ID"] == "trace-123"
        ws = await node.ws(alice["access_token"])
        async with session.get(server.url + "/metrics") as response:
            metrics = await response.text()
        for name in (
            "chat_http_requests_total",
            "chat_http_request_seconds_bucket",
            "chat_websockets_open 1.0",
            "chat_messages_persisted_total 1.0",
            "chat_login_failures_total 1.0",
            "chat_relay_connected 1.0",
            "chat_db_connections_in_use",
        ):
            assert name in metrics, name
        await ws.close()
    finally:
        server.stop()
    logs = server.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "chat_server.access"]
    assert any(
        line["request_id"] == "trace-123"
        and line["route"] == "/api/v1/users/me"
        and line["status"] == 200
        and line["user_id"] == alice["user"]["id"]
        and "latency_ms" in line
        for line in access
    )
    for secret in (
        alice["access_token"],
        alice["refresh_token"],
        PASSWORD,
        "nope nope",
        secret_body,
    ):
        assert secret not in logs
