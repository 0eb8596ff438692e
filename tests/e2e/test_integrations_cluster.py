"""Tokens and webhooks across two processes: revocation everywhere at once, and each
outgoing delivery made by exactly one node."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from ..helpers import Account
from ..helpers.cluster import Node, start_nodes
from ..helpers.servers import RedisProcess, ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
async def nodes(tmp_path, cluster_db, session) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes on one database and Redis that may call loopback webhooks."""
    redis = RedisProcess(tmp_path).start()
    servers: list[ServerProcess] = []
    try:
        servers = start_nodes(tmp_path, cluster_db, redis.url, CHAT_OUTBOUND_PRIVATE="true")
        yield Node(session, servers[0]), Node(session, servers[1])
    finally:
        await session.close()
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in servers))
        redis.stop()


async def _signup(node: Node, name: str) -> Account:
    body = await node.signup(name)
    return Account(body["user"], body["access_token"], body["refresh_token"])


async def _close_code(ws) -> int:
    msg = await ws.receive(timeout=5)
    while msg.type == WSMsgType.TEXT:  # frames queued before the close
        msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE, msg
    return msg.data


async def test_a_token_revoked_on_one_node_ends_on_the_other(nodes):
    one, two = nodes
    alice = await _signup(one, "alice")
    status, made = await one.call(
        "POST", "/api/v1/auth/tokens", alice.access_token, json={"name": "cli"}
    )
    assert status == 201
    token = made["token"]
    status, me = await two.call("GET", "/api/v1/users/me", token)
    assert status == 200 and me["id"] == alice.id
    socket_on_two = await two.ws(token)
    status, _ = await one.call("DELETE", f"/api/v1/auth/tokens/{made['id']}", alice.access_token)
    assert status == 204
    assert await _close_code(socket_on_two) == 1008
    status, body = await two.call("GET", "/api/v1/users/me", token)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_each_outgoing_delivery_is_made_by_one_node(nodes):
    one, two = nodes
    received: list[tuple[str, int, bool]] = []
    all_received = asyncio.Event()
    expected_count = 10
    secret = ""

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers["X-Chat-Signature"], expected)
        message = (await request.json())["message"]
        received.append((request.headers["X-Chat-Delivery"], message["id"], signed))
        if len(received) >= expected_count:
            all_received.set()
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        alice = await _signup(one, "alice")
        status, room = await one.call(
            "POST", "/api/v1/rooms", alice.access_token, json={"name": "ops", "kind": "public"}
        )
        assert status == 201
        status, created = await two.call(
            "POST",
            f"/api/v1/rooms/{room['id']}/webhooks",
            alice.access_token,
            json={"name": "out", "kind": "outgoing", "url": f"http://127.0.0.1:{port}/hook"},
        )
        assert status == 201, created
        secret = created["secret"]
        # An incoming hook made on one node posts through the other.
        status, incoming = await one.call(
            "POST",
            f"/api/v1/rooms/{room['id']}/webhooks",
            alice.access_token,
            json={"name": "in", "kind": "incoming"},
        )
        assert status == 201
        hook_path = "/api/v1/hooks/" + incoming["secret"]
        sent = []
        for i in range(expected_count):
            node = (one, two)[i % 2]
            if i % 3 == 0:
                status, message = await node.call("POST", hook_path, json={"text": f"m{i}"})
            else:
                status, message = await node.call(
                    "POST",
                    f"/api/v1/rooms/{room['id']}/messages",
                    alice.access_token,
                    json={"body": f"m{i}"},
                )
            assert status == 201, message
            sent.append(message["id"])
        await asyncio.wait_for(all_received.wait(), 20)
        # Absence of a duplicate cannot be awaited: a second node delivering the same
        # message would have done so within its 2 s poll.
        await asyncio.sleep(2.5)
        assert sorted(message_id for _, message_id, _ in received) == sorted(sent)
        assert len({delivery for delivery, _, _ in received}) == len(sent)
        assert all(signed for _, _, signed in received)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
