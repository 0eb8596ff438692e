"""Web Push across two server processes (one PostgreSQL, one Redis).

Both nodes sign with the one VAPID key given by CHAT_VAPID_PRIVATE_KEY; a member
connected to either node gets no push for a message sent on the other, and gets
one once offline everywhere; a level change on one node reaches the member's
socket on the other as `notify`.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ..helpers import Account
from ..helpers.cluster import Cluster, Node
from ..helpers.push import SUBSCRIPTIONS, b64url, push_receiver
from ..helpers.ws import next_of

pytestmark = pytest.mark.e2e

VAPID_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def cluster_env() -> dict[str, str]:
    raw = VAPID_KEY.private_numbers().private_value.to_bytes(32, "big")
    return {"CHAT_OUTBOUND_PRIVATE": "true", "CHAT_VAPID_PRIVATE_KEY": b64url(raw)}


async def decided(node: Node) -> int:
    """How many new messages the node has decided pushes for (its /metrics)."""
    async with node.session.get(node.base + "/metrics") as response:
        text = await response.text()
    match = re.search(r"^chat_push_messages_total (\S+)$", text, re.MULTILINE)
    assert match, "chat_push_messages_total missing from /metrics"
    return int(float(match.group(1)))


async def until_decided(node: Node, count: int) -> None:
    """Polls /metrics (the one outside view of the node's push queue) for 20 s at most."""
    for _ in range(400):
        if await decided(node) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the node decided pushes for fewer than {count} messages")


async def until_presence(ws, user_id: int, status: str) -> None:
    expected = {"type": "presence", "user_id": user_id, "status": status}
    while await next_of(ws, "presence", timeout=20) != expected:
        pass


async def send(node: Node, account: Account, room_id: int, body: str) -> dict:
    status, message = await node.call(
        "POST", f"/api/v1/rooms/{room_id}/messages", account.access_token, json={"body": body}
    )
    assert status == 201, message
    return message


async def test_pushes_follow_presence_on_every_node(cluster: Cluster):
    one, two = cluster.one, cluster.two
    alice = await cluster.signup(one, "alice")
    bob = await cluster.signup(two, "bob")
    keys = {
        (await node.call("GET", "/api/v1/server"))[1]["vapid_public_key"] for node in (one, two)
    }
    assert len(keys) == 1, "both nodes sign with the configured key"
    status, dm = await one.call("POST", "/api/v1/dm", alice.access_token, json={"user_id": bob.id})
    assert status == 201 and dm["notify"] == {"level": "all", "muted_until": None}
    async with push_receiver() as receiver:
        receiver.server_key = keys.pop()
        phone = receiver.subscriber("bob-phone")
        status, body = await two.call(
            "POST", SUBSCRIPTIONS, bob.access_token, json=phone.subscription
        )
        assert status == 201, body

        # Bob is connected on node one; Alice sends on node two, which knows he is
        # online once Alice's socket there has heard so.
        bob_ws = await one.ws(bob.access_token)
        alice_ws = await two.ws(alice.access_token)
        await until_presence(alice_ws, bob.id, "online")
        before = await decided(two)
        await send(two, alice, dm["id"], "you are online")
        await until_decided(two, before + 1)
        assert receiver.received == [] and phone.attempts == 0

        # A level change on node two reaches Bob's socket on node one.
        status, settings = await two.call(
            "PUT",
            f"/api/v1/rooms/{dm['id']}/notify",
            bob.access_token,
            json={"level": "mentions"},
        )
        assert status == 200 and settings == {"level": "mentions", "muted_until": None}
        frame = await next_of(bob_ws, "notify", timeout=20)
        assert frame == {"type": "notify", "room_id": dm["id"], **settings}

        # Offline everywhere: a mention is pushed, once; a plain message is not.
        await bob_ws.close()
        await until_presence(alice_ws, bob.id, "offline")
        before = await decided(two)
        await send(two, alice, dm["id"], "plain, not pushed")
        mention = await send(two, alice, dm["id"], "@bob are you there?")
        push = await receiver.next_push(timeout=20)
        await until_decided(two, before + 2)
        assert push.payload == {
            "type": "message",
            "room_id": dm["id"],
            "seq": mention["seq"],
            "room_name": "",
            "sender": {"id": alice.id, "display_name": "alice"},
            "body": "@bob are you there?",
        }
        assert phone.attempts == 1 and len(receiver.received) == 1
        await alice_ws.close()
