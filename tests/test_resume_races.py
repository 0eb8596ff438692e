"""Races between a `resume` and deliveries that reach the socket another way."""

from __future__ import annotations

import asyncio

from chat_server import keys
from chat_server.realtime.relay import Joined

from .helpers import SHORT_HOLD, create_room, join, send
from .helpers.ws import connect, receive


async def test_a_poll_during_the_hold_waits_for_the_resume(client, alice, bob) -> None:
    """The hub's poll (Redis away) finds a held socket behind: it catches up
    after the resume's replay, like a held live event, so the replay starts
    where the client's `seen` says and names no gap."""
    room = await create_room(client, alice)
    await join(client, bob, room)
    await send(client, alice, room, "seen")
    ws = await connect(client, bob)
    await ws.close()
    await send(client, alice, room, "missed")
    ws = await connect(client, bob)  # ready; live events held for a resume
    await send(client, alice, room, "after ready")
    await client.server.app[keys.HUB].poll(0)
    await asyncio.sleep(SHORT_HOLD / 4)  # (the writer's turn, well inside the hold)
    last_seen = 3  # room created, bob joined, "seen"
    await ws.send_json({"type": "resume", "rooms": {str(room["id"]): last_seen}})
    frames = []
    while not frames or frames[-1]["type"] != "resumed":
        frames.append(await receive(ws, 5))
    while len([f for f in frames if f["type"] == "message.new"]) < 2:
        frames.append(await receive(ws, 5))
    delivered = [(f["type"], f.get("pos")) for f in frames if f["type"] != "resumed"]
    assert delivered == [("message.new", 4), ("message.new", 5)], frames


async def test_a_stale_join_in_a_poll_yields_to_a_later_one(client, alice, bob) -> None:
    """A poll looking back hands the socket an old membership (over before it
    opened) and a new one it never heard of (the relay lost it), both over by
    now: the new one's events are delivered, up to the removal."""
    room = await create_room(client, alice)
    db = client.server.app[keys.DB]
    old_join = await db.add_member(room["id"], bob.id, "member", None)
    await db.remove_member(room["id"], bob.id, "left", bob.id)
    ws = await connect(client, bob)
    await ws.send_json({"type": "resume", "rooms": {}})
    while (await receive(ws, 5))["type"] != "resumed":
        pass
    # Joined and left again behind the hub's back (as if the relay were away).
    new_join = await db.add_member(room["id"], bob.id, "member", None)
    assert old_join is not None and new_join is not None
    await send(client, alice, room, "while bob was in")
    left = await db.remove_member(room["id"], bob.id, "left", bob.id)
    await client.server.app[keys.HUB].poll(0)
    frames = [await receive(ws, 5)]
    while frames[-1].get("pos") != left:
        frames.append(await receive(ws, 5))
    stream = [(f["type"], f.get("pos")) for f in frames if "pos" in f]
    assert stream == [
        ("member.joined", new_join),
        ("message.new", new_join + 1),
        ("member.left", left),
    ], frames


async def test_a_catch_up_queued_before_a_stale_join_waits_for_its_check(
    client, alice, bob
) -> None:
    """A poll looking back (Redis away) hands a holding socket a join that was
    over before it opened, and finds the room behind; the join's check drops
    the room again. When the hold ends, the held room's catch-up is queued, and
    the next poll hands the same old join over before that catch-up runs: the
    catch-up must leave the room to the join's check rather than replay the
    old membership (an earlier socket had it)."""
    room = await create_room(client, alice)
    db, hub = client.server.app[keys.DB], client.server.app[keys.HUB]
    old_join = await db.add_member(room["id"], bob.id, "member", None)
    assert old_join is not None
    await send(client, alice, room, "while bob was in")
    await db.remove_member(room["id"], bob.id, "left", bob.id)
    ws = await connect(client, bob)  # ready, not in the room; live events held
    (conn,) = hub.by_user[bob.id]
    newest = (await db.last_positions([room["id"]]))[room["id"]]
    stale = Joined(bob.id, room["id"], old_join)
    hub.apply_remote("another node", stale)  # followed from the old join, its check queued
    conn.behind(room["id"], newest)  # the poll finds it behind: held until the hold ends
    assert conn.writer is not None
    await conn.writer  # the check: a membership over before the socket opened
    assert not conn.follows(room["id"])
    conn.release()  # the hold ends: the held room's catch-up is queued
    hub.apply_remote("another node", stale)  # and the old join comes again before it runs
    await ws.send_json({"type": "ping"})
    frames = [await receive(ws, 5)]
    while frames[-1]["type"] != "pong":
        frames.append(await receive(ws, 5))
    assert [f["type"] for f in frames] == ["pong"], frames  # bob is in no room now


async def test_a_membership_over_before_its_join_is_heard_of_is_delivered(
    client, alice, bob
) -> None:
    """While Redis is away the poll is the only news of joins: by the time it
    runs, bob may have joined, left and joined again since his socket opened.
    The socket owes him both memberships, the one that is over included, not
    only the stream from his latest join."""
    room = await create_room(client, alice)
    ws = await connect(client, bob)
    await ws.send_json({"type": "resume", "rooms": {}})
    while (await receive(ws, 5))["type"] != "resumed":
        pass
    db = client.server.app[keys.DB]
    # Behind the hub's back (as if the relay were away).
    first_join = await db.add_member(room["id"], bob.id, "member", None)
    await send(client, alice, room, "while bob was in")
    left = await db.remove_member(room["id"], bob.id, "left", bob.id)
    second_join = await db.add_member(room["id"], bob.id, "member", None)
    assert first_join is not None and left is not None and second_join is not None
    await client.server.app[keys.HUB].poll(0)
    frames = [await receive(ws, 5)]
    while frames[-1].get("pos") != second_join:
        frames.append(await receive(ws, 5))
    stream = [(f["type"], f.get("pos")) for f in frames if "pos" in f]
    assert stream == [
        ("member.joined", first_join),
        ("message.new", first_join + 1),
        ("member.left", left),
        ("member.joined", second_join),
    ], frames


async def test_a_resume_before_a_join_notice_is_checked_replays_from_the_client(
    client, alice, bob
) -> None:
    """A join notice reaches a socket that is still connecting (bob left and came
    back meanwhile), and the client's `resume` then names an older position of
    the room: the end of bob's earlier membership is owed (as a replay would
    bring it), then the stream from his new join, nothing of the time between."""
    room = await create_room(client, alice)
    db, hub = client.server.app[keys.DB], client.server.app[keys.HUB]

    async def sent(body: str) -> int:
        await send(client, alice, room, body)
        return (await db.last_positions([room["id"]]))[room["id"]]

    await join(client, bob, room)
    seen = await sent("seen before")
    missed = await sent("missed")
    left = await db.remove_member(room["id"], bob.id, "left", bob.id)
    away = await sent("while bob was away")
    rejoined = await db.add_member(room["id"], bob.id, "member", None)
    newest = await sent("after")
    assert left is not None and rejoined is not None and missed < left < away < rejoined
    ws = await connect(client, bob)
    (conn,) = hub.by_user[bob.id]
    # As when the notice comes before `ready` is read and the `auth` frame names
    # rooms to resume (ws.py resumes right after `ready`, before the writer runs):
    # the room followed from the notice (its check queued), advanced to `ready`'s
    # position, then rewound by the resume, all in one turn.
    conn.unfollow(room["id"])
    hub.apply_remote("another node", Joined(bob.id, room["id"], rejoined))
    conn.advance_to(room["id"], newest)
    conn.resume({room["id"]: seen})
    frames = [await receive(ws, 5)]
    while frames[-1]["type"] != "resumed":
        frames.append(await receive(ws, 5))
    delivered = [f["pos"] for f in frames if f.get("room_id") == room["id"] and "pos" in f]
    assert delivered == [missed, left, rejoined, newest], frames
