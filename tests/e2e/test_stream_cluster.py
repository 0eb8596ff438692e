"""The room stream across two server processes on one PostgreSQL and a throwaway Redis.

Whatever Redis does (stopped, paused, restarted empty), each connection gets its
rooms' events in `pos` order with no hole or duplicate (every `Recorder` checks
that as frames arrive), a removal takes effect at its `pos` on every node, and
nothing deleted comes back (API.md "Room stream", "WebSocket"; DESIGN.md
invariants 3, 9, 11).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ..helpers import Account
from ..helpers.cluster import Cluster, Node
from ..helpers.ws import Recorder, event_key, fold_messages, next_of

pytestmark = pytest.mark.e2e

# How long Redis is paused, and how late a cross-node event may be meanwhile:
# ~1 s to notice the stall, then polling (API.md: "no answer within 1 s").
STALL_SECONDS = 4.0
STALL_LATENCY = 3.0
# How long a removal may take to reach the other node while Redis is down.
REMOVAL_DEADLINE = 8.0


async def post(node: Node, account: Account, room_id: int, body: str) -> dict:
    status, message = await node.call(
        "POST", f"/api/v1/rooms/{room_id}/messages", account.access_token, json={"body": body}
    )
    assert status == 201, message
    return message


async def member(node: Node, owner: Account, room_id: int, user: Account) -> None:
    status, body = await node.call(
        "POST", f"/api/v1/rooms/{room_id}/members", owner.access_token, json={"user_id": user.id}
    )
    assert status == 201, body


async def assert_matches_the_stream(cluster: Cluster, viewer: Account, *recorders: Recorder):
    """Each recorder's run of each room is the stored stream over the same stretch."""
    for recorder in recorders:
        recorder.assert_clean()
        for room_id, delivered in recorder.events.items():
            stored = await cluster.events(viewer, room_id)
            first, last = delivered[0]["pos"], delivered[-1]["pos"]
            assert [event_key(e) for e in delivered] == [
                event_key(e) for e in stored if first <= e["pos"] <= last
            ], recorder.label


async def chatter(node: Node, account: Account, room_id: int, stop: asyncio.Event) -> None:
    """Concurrent traffic: sends over a socket on `node`, one after another's ack."""
    ws = await node.ws(account.access_token)
    n = 0
    while not stop.is_set():
        await ws.send_json({"type": "send", "room_id": room_id, "body": f"chatter {n}"})
        await next_of(ws, "ack")
        n += 1
    await ws.close()


async def test_a_kick_while_redis_is_down_reaches_the_other_node(cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    carol = await cluster.signup(two, "carol")
    room_id = await cluster.room(alice, kind="private")
    await member(one, alice, room_id, bob)
    await member(one, alice, room_id, carol)
    victim = await cluster.listen(two, bob, "bob on two")
    witness = await cluster.listen(two, carol, "carol on two")
    before = await post(one, alice, room_id, "before")
    await victim.wait_for(lambda r: r.has_message(before["id"]), what="live")

    cluster.redis.stop()
    status, _ = await one.call(
        "DELETE", f"/api/v1/rooms/{room_id}/members/{bob.id}", alice.access_token
    )
    assert status == 204
    for i in range(5):
        await post(one, alice, room_id, f"after the kick {i}")
    await victim.wait_for(
        lambda r: r.has("room.removed") and r.has("member.left", room_id=room_id),
        REMOVAL_DEADLINE,
        "told of the kick while Redis is down",
    )
    end = await cluster.last_pos(alice, room_id)
    # Node two delivered the later messages to carol, so it had them for bob too.
    await witness.wait_pos(room_id, end, REMOVAL_DEADLINE)
    await victim.live()
    left = victim.events[room_id][-1]
    assert left["type"] == "member.left" and left["user"]["id"] == bob.id
    assert left["reason"] == "kicked" and left["pos"] == 5
    assert "after the kick" not in victim.text()
    status, _ = await two.call(
        "POST", f"/api/v1/rooms/{room_id}/messages", bob.access_token, json={"body": "let me in"}
    )
    assert status in (403, 404)

    cluster.redis.start()
    await post(one, alice, room_id, "after the restart")
    await witness.wait_pos(room_id, end + 1, REMOVAL_DEADLINE)
    await victim.live()
    assert victim.events[room_id][-1]["pos"] == 5 and "after the restart" not in victim.text()
    await assert_matches_the_stream(cluster, alice, victim, witness)


async def test_a_kick_is_not_overtaken_by_a_slow_relay(cluster):
    """Redis slow (paused briefly, below the stall threshold): node two must not deliver
    its own later messages to the victim before the kick that node one committed."""
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    room_id = await cluster.room(alice, kind="private")
    await member(one, alice, room_id, bob)
    victim = await cluster.listen(two, bob, "bob on two")
    owner_on_two = await cluster.listen(two, alice, "alice on two")
    cluster.redis.pause()
    try:
        status, _ = await one.call(
            "DELETE", f"/api/v1/rooms/{room_id}/members/{bob.id}", alice.access_token
        )
        assert status == 204
        for i in range(5):
            last = await post(two, alice, room_id, f"after the kick {i}")
    finally:
        cluster.redis.unpause()
    await owner_on_two.wait_for(lambda r: r.has_message(last["id"]), what="given the last")
    await victim.wait_for(
        lambda r: r.has("room.removed") and r.has("member.left", room_id=room_id),
        REMOVAL_DEADLINE,
        "told of the kick",
    )
    await victim.live()
    assert "after the kick" not in victim.text()
    assert victim.events[room_id][-1]["type"] == "member.left"
    await assert_matches_the_stream(cluster, alice, victim, owner_on_two)


async def test_a_redis_stall_switches_to_polling(cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    room_id = await cluster.room(alice)
    await cluster.join(two, bob, room_id)
    listener = await cluster.listen(two, bob, "bob on two")
    warm_up = await post(one, alice, room_id, "warm up")
    await listener.wait_for(lambda r: r.has_message(warm_up["id"]), what="warmed up")

    sent_at: dict[int, float] = {}
    cluster.redis.pause()
    try:
        stalled = time.monotonic()
        while time.monotonic() - stalled < STALL_SECONDS:
            before = time.monotonic()
            message = await post(one, alice, room_id, f"stalled {len(sent_at)}")
            sent_at[message["id"]] = time.monotonic()
            assert sent_at[message["id"]] - before < 1.0, "a send waited on the stalled Redis"
            await asyncio.sleep(0.25)  # a steady trickle, not a flood
    finally:
        cluster.redis.unpause()
    await listener.wait_for(lambda r: all(map(r.has_message, sent_at)), 10, "given everything")
    arrived = {
        frame["message"]["id"]: at
        for at, frame in listener.frames
        if frame.get("type") == "message.new"
    }
    late = {i: round(arrived[i] - sent, 2) for i, sent in sent_at.items()}
    assert max(late.values()) < STALL_LATENCY, late
    await assert_matches_the_stream(cluster, alice, listener)


async def test_a_redis_restart_that_loses_its_data_loses_nothing(cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    carol = await cluster.signup(two, "carol")
    room_id = await cluster.room(alice)
    for account in (bob, carol):
        await cluster.join(two, account, room_id)
    recorders = [
        await cluster.listen(two, bob, "bob on two"),
        await cluster.listen(one, bob, "bob on one"),
        await cluster.listen(one, alice, "alice on one"),
    ]
    restarted = asyncio.Event()

    async def alice_traffic() -> None:
        previous = None
        for i in range(40):
            message = await post(one, alice, room_id, f"alice {i}")
            path = f"/api/v1/rooms/{room_id}/messages/{message['id']}"
            if i % 3 == 0:
                status, _ = await two.call(
                    "PATCH", path, alice.access_token, json={"body": f"alice {i} edited"}
                )
                assert status == 200
            if i % 5 == 4 and previous is not None:
                status, _ = await two.call("DELETE", previous, alice.access_token)
                assert status == 204
            previous = path
            if i == 15:
                cluster.redis.stop()
                cluster.redis.start()  # empty: subscriptions and queued state are gone
                restarted.set()

    async def carol_traffic() -> None:
        for i in range(20):
            await post(two, carol, room_id, f"carol {i}")
            if i == 10:
                await restarted.wait()

    await asyncio.gather(alice_traffic(), carol_traffic())
    end = await cluster.last_pos(alice, room_id)
    for recorder in recorders:
        await recorder.wait_pos(room_id, end, 15)
    await assert_matches_the_stream(cluster, alice, *recorders)
    stored = await cluster.events(alice, room_id)
    for recorder in recorders:
        assert fold_messages(recorder.events[room_id]) == fold_messages(stored), recorder.label


async def test_leave_on_one_node_and_rejoin_on_the_other_is_not_deaf(cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    room_id = await cluster.room(alice)
    path = f"/api/v1/rooms/{room_id}"
    await cluster.join(two, bob, room_id)
    listener = await cluster.listen(two, bob, "bob on two")
    stop = asyncio.Event()
    traffic = asyncio.create_task(chatter(one, alice, room_id, stop))
    try:
        for trial in range(6):
            # Every other time Redis holds node one's "left" back until after the rejoin.
            paused = trial % 2 == 0
            if paused:
                cluster.redis.pause()
            try:
                assert (await one.call("POST", f"{path}/leave", bob.access_token))[0] == 204
                assert (await two.call("POST", f"{path}/join", bob.access_token))[0] == 200
            finally:
                if paused:
                    cluster.redis.unpause()
            marker = await post(one, alice, room_id, f"marker {trial}")
            await listener.wait_for(
                lambda r, m=marker: r.has_message(m["id"]), 5, f"hearing marker {trial}"
            )
    finally:
        stop.set()
        await traffic
    listener.assert_clean()


async def test_edits_and_deletes_right_after_a_send_on_the_other_node(cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    carol = await cluster.signup(one, "carol")
    room_id = await cluster.room(alice)
    for account in (bob, carol):
        await cluster.join(two, account, room_id)
    recorders = [
        await cluster.listen(node, account, f"{name} on {node_name}")
        for account, name in ((alice, "alice"), (bob, "bob"))
        for node, node_name in ((one, "one"), (two, "two"))
    ]
    stop = asyncio.Event()
    traffic = asyncio.create_task(chatter(one, carol, room_id, stop))  # node one is busy
    try:
        for i in range(30):
            message = await post(one, alice, room_id, f"original {i}")
            path = f"/api/v1/rooms/{room_id}/messages/{message['id']}"
            if i % 2:
                status, _ = await two.call(
                    "PATCH", path, alice.access_token, json={"body": f"edited {i}"}
                )
                assert status == 200
            else:
                assert (await two.call("DELETE", path, alice.access_token))[0] == 204
    finally:
        stop.set()
        await traffic
    end = await cluster.last_pos(alice, room_id)
    for recorder in recorders:
        await recorder.wait_pos(room_id, end, 15)
        seen: set[int] = set()
        for event in recorder.events[room_id]:
            message_id = event.get("message", {}).get("id")
            if event["type"] == "message.new":
                seen.add(message_id)
            elif message_id is not None:
                assert message_id in seen, (recorder.label, event)
    await assert_matches_the_stream(cluster, alice, *recorders)
