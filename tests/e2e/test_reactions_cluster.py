"""Reactions and pins across two server processes (one PostgreSQL, one Redis).

Users on both nodes react to one message at once, over REST and WebSocket; the
counts end exact, and every connection, on either node, sees the same run of
room events, equal to the stored stream.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from ..helpers.cluster import Cluster, Node
from ..helpers.conversation import fold_reactions
from ..helpers.ws import next_of

pytestmark = pytest.mark.e2e

EMOJI = ["👍", "🎉", ":ship-it:", "🇫🇷"]


def reaction_path(room_id: int, message_id: int, emoji: str) -> str:
    return f"/api/v1/rooms/{room_id}/messages/{message_id}/reactions/{quote(emoji, safe='')}"


async def test_reactions_on_two_nodes_count_exactly_and_read_the_same(cluster: Cluster):
    one, two = cluster.one, cluster.two
    owner = await cluster.signup(one, "owner")
    room_id = await cluster.room(owner)
    users = [await cluster.signup(one if i % 2 else two, f"user{i}") for i in range(6)]
    for i, user in enumerate(users):
        await cluster.join(one if i % 2 else two, user, room_id)
    status, message = await one.call(
        "POST", f"/api/v1/rooms/{room_id}/messages", owner.access_token, json={"body": "vote"}
    )
    assert status == 201
    start = await cluster.last_pos(owner, room_id)
    listeners = [
        await cluster.listen(node, account, f"{account.user['username']} on {name}")
        for account in (owner, users[0], users[1])
        for node, name in ((one, "one"), (two, "two"))
    ]

    async def over_rest(node: Node, user, emoji: str, method: str) -> None:
        status, body = await node.call(
            method, reaction_path(room_id, message["id"], emoji), user.access_token
        )
        assert status == 200, body

    async def over_ws(node: Node, user, emoji: str) -> None:
        ws = await node.ws(user.access_token)
        frame = {"type": "react", "room_id": room_id, "message_id": message["id"]}
        await ws.send_json(frame | {"emoji": emoji, "ref": emoji})
        ack = await next_of(ws, "ack")
        assert ack["ref"] == emoji and ack["result"]["me"] is True
        await ws.close()

    calls = []
    for i, user in enumerate(users):
        node = one if i % 2 else two
        other = two if i % 2 else one
        calls += [over_rest(node, user, emoji, "PUT") for emoji in EMOJI[:3]]
        calls.append(over_ws(other, user, EMOJI[3]))
    await asyncio.gather(*calls)
    # Every other user takes one back, on the other node; the owner pins meanwhile.
    status, _ = await one.call(
        "POST",
        f"/api/v1/rooms/{room_id}/pins",
        owner.access_token,
        json={"message_id": message["id"]},
    )
    assert status == 200
    await asyncio.gather(
        *(
            over_rest(two if i % 2 else one, user, EMOJI[0], "DELETE")
            for i, user in enumerate(users)
            if i % 2 == 0
        )
    )

    stored = (await cluster.events(owner, room_id))[start:]
    end = stored[-1]["pos"]
    assert len(stored) == len(users) * len(EMOJI) + 1 + len(users) // 2
    assert fold_reactions(stored) == {
        (message["id"], EMOJI[0]): len(users) // 2,
        **{(message["id"], emoji): len(users) for emoji in EMOJI[1:]},
    }
    added = list(range(1, len(users) + 1))
    taken_back = list(range(len(users) - 1, len(users) // 2 - 1, -1))  # 5, 4, 3
    for emoji in EMOJI:  # each change's count is exact: one more, or one less, in pos order
        counts = [e["count"] for e in stored if e.get("emoji") == emoji]
        assert counts == (added + taken_back if emoji == EMOJI[0] else added), emoji
    status, history = await two.call(
        "GET", f"/api/v1/rooms/{room_id}/messages", users[0].access_token
    )
    assert status == 200
    [seen] = history["items"]
    assert seen["pinned"] is True
    assert {(r["emoji"], r["count"], r["me"]) for r in seen["reactions"]} == {
        (EMOJI[0], len(users) // 2, False),
        *((emoji, len(users), True) for emoji in EMOJI[1:]),
    }

    def comparable(event: dict) -> tuple:
        return (
            event["pos"],
            event["type"],
            event.get("emoji"),
            event.get("user_id"),
            event.get("count"),
        )

    for listener in listeners:
        await listener.wait_pos(room_id, end, 20)
        delivered = [e for e in listener.room_events() if e["room_id"] == room_id]
        assert list(map(comparable, delivered)) == list(map(comparable, stored)), listener.label
        listener.assert_clean()
