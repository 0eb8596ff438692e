"""Reactions (API.md "Conversation"), on both engines: validation, idempotency, exact
counts under concurrency, membership, room events live and replayed, per-viewer `me`."""

from __future__ import annotations

import asyncio
import random
from itertools import pairwise

import pytest

from chat_server import create_app, keys
from chat_server.config import Rate

from .helpers import ROOMS, create_room, error_of, join, make_config, send, signup
from .helpers.conversation import (
    fold_reactions,
    history,
    react,
    reaction_path,
    reactors,
    room_events,
    unreact,
)
from .helpers.ws import Recorder, connect, next_of
from .helpers.ws import send as send_frame

FAMILY = "👨‍👩‍👧‍👦"
VALID = [FAMILY, "👍🏽", "🇯🇵", "1️⃣", ":+1:", "❤️"]


async def test_invalid_emoji_is_400_naming_emoji(client, alice):
    room = await create_room(client, alice)
    message = await send(client, alice, room)
    for bad in ["👍👍", "ok", ":Bad:", "🇫🇷🇩🇪", ":" + "x" * 33 + ":", "👍 x"]:
        response = await client.put(
            reaction_path(room["id"], message["id"], bad), headers=alice.headers
        )
        error = await error_of(response, 400)
        assert error["code"] == "invalid_request" and "emoji" in error["details"]["fields"]
    # An empty emoji: the path's last segment is empty, which no reaction route matches.
    response = await client.put(
        f"{ROOMS}/{room['id']}/messages/{message['id']}/reactions/", headers=alice.headers
    )
    assert response.status in (400, 404, 405)
    assert await history(client, alice, room["id"]) == [message | {"reactions": []}]
    assert [e["type"] for e in await room_events(client, alice, room["id"])] == [
        "member.joined",
        "message.new",
    ]


async def test_valid_emoji_count_and_repeat_nothing(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    for emoji in VALID:
        assert await react(client, alice, message, emoji) == {
            "emoji": emoji,
            "count": 1,
            "me": True,
        }
        assert await react(client, alice, message, emoji) == {
            "emoji": emoji,
            "count": 1,
            "me": True,
        }
    assert await react(client, bob, message, FAMILY) == {"emoji": FAMILY, "count": 2, "me": True}
    assert await unreact(client, bob, message, FAMILY) == {"emoji": FAMILY, "count": 1, "me": False}
    assert await unreact(client, bob, message, FAMILY) == {"emoji": FAMILY, "count": 1, "me": False}
    assert await unreact(client, bob, message, ":+1:") == {"emoji": ":+1:", "count": 1, "me": False}
    reaction_events = [
        (e["type"], e["emoji"], e["user_id"], e["count"])
        for e in await room_events(client, alice, room["id"])
        if e["type"].startswith("reaction.")
    ]
    assert reaction_events == [("reaction.added", emoji, alice.id, 1) for emoji in VALID] + [
        ("reaction.added", FAMILY, bob.id, 2),
        ("reaction.removed", FAMILY, bob.id, 1),
    ]
    [seen_by_alice] = await history(client, alice, room["id"])
    [seen_by_bob] = await history(client, bob, room["id"])
    assert seen_by_alice["reactions"] == [{"emoji": e, "count": 1, "me": True} for e in VALID]
    assert seen_by_bob["reactions"] == [{"emoji": e, "count": 1, "me": False} for e in VALID]
    assert await reactors(client, bob, message, FAMILY) == [alice.id]


async def test_the_twenty_first_distinct_emoji_is_409(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    names = [f":e{i}:" for i in range(21)]
    for name in names[:20]:
        await react(client, alice, message, name)
    error = await error_of(
        await client.put(reaction_path(room["id"], message["id"], names[20]), headers=bob.headers),
        409,
    )
    assert error["code"] == "conflict"
    assert (await react(client, bob, message, names[0]))["count"] == 2  # an existing one is fine
    await unreact(client, alice, message, names[5])
    await react(client, bob, message, names[20])  # a place came free
    [seen] = await history(client, bob, room["id"])
    assert len(seen["reactions"]) == 20


async def test_reacting_needs_membership_and_nothing_commits_after_leaving(client, alice, bob):
    public = await create_room(client, alice)
    private = await create_room(client, alice, name="inner", kind="private")
    message = await send(client, alice, public)
    hidden = await send(client, alice, private)
    assert (await react(client, bob, message, "👍", status=403))["error"]["code"] == "forbidden"
    assert (await react(client, bob, hidden, "👍", status=404))["error"]["code"] == "not_found"
    await join(client, bob, public)
    await react(client, bob, message, "👍")
    response = await client.post(f"{ROOMS}/{public['id']}/leave", headers=bob.headers)
    assert response.status == 204
    before = await room_events(client, alice, public["id"])
    await react(client, bob, message, "🎉", status=403)
    await unreact(client, bob, message, "👍", status=403)
    assert await room_events(client, alice, public["id"]) == before
    [seen] = await history(client, alice, public["id"])
    assert seen["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]


async def test_unknown_or_deleted_message_is_404_and_deletion_drops_reactions(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    await react(client, bob, message, "👍")
    await react(client, alice, message, "👍")
    other_room = await create_room(client, alice, name="other")
    elsewhere = await send(client, alice, other_room)
    await react(client, alice, {"room_id": room["id"], "id": elsewhere["id"]}, "👍", status=404)
    response = await client.delete(
        f"{ROOMS}/{room['id']}/messages/{message['id']}", headers=alice.headers
    )
    assert response.status == 204
    [tombstone] = await history(client, bob, room["id"])
    assert tombstone["deleted"] and tombstone["reactions"] == [] and not tombstone["pinned"]
    await react(client, bob, message, "👍", status=404)
    await unreact(client, bob, message, "👍", status=404)
    response = await client.get(reaction_path(room["id"], message["id"], "👍"), headers=bob.headers)
    await error_of(response, 404)
    # No reaction.removed of its own: the message.deleted says it.
    kinds = [e["type"] for e in await room_events(client, bob, room["id"])]
    assert kinds[-1] == "message.deleted" and "reaction.removed" not in kinds
    async with client.app[keys.DB].engine.transaction() as tx:
        left = await tx.fetchval(
            "SELECT count(*) FROM reactions WHERE message_id = $1", message["id"]
        )
    assert left == 0


async def test_reactions_from_many_users_at_once_count_exactly(client, alice):
    room = await create_room(client, alice)
    message = await send(client, alice, room)
    users = [await signup(client, f"user{i}") for i in range(8)]
    for user in users:
        await join(client, user, room)
    answers = await asyncio.gather(*(react(client, user, message, "🔥") for user in users))
    assert sorted(a["count"] for a in answers) == list(range(1, 9))
    events = [e for e in await room_events(client, alice, room["id"]) if e["type"].startswith("r")]
    assert [e["count"] for e in events] == list(range(1, 9))
    assert sorted(await reactors(client, alice, message, "🔥")) == sorted(u.id for u in users)


async def test_add_and_remove_raced_by_one_user_end_as_the_events_say(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    await react(client, alice, message, "👀")  # someone else's, to count with
    rng = random.Random(15)
    calls = [
        (react if rng.random() < 0.5 else unreact)(client, bob, message, emoji)
        for emoji in ("👀", ":x:")
        for _ in range(12)
    ]
    rng.shuffle(calls)
    await asyncio.gather(*calls)
    events = await room_events(client, alice, room["id"])
    [seen] = await history(client, alice, room["id"])
    assert fold_reactions(events) == {
        (message["id"], r["emoji"]): r["count"] for r in seen["reactions"]
    }
    for emoji in ("👀", ":x:"):  # events alternate: a repeat announces nothing
        kinds = [e["type"] for e in events if e.get("emoji") == emoji and e["user_id"] == bob.id]
        assert all(a != b for a, b in pairwise(kinds)), kinds
    bob_has = {e for e in ("👀", ":x:") if bob.id in await reactors(client, alice, message, e)}
    [seen_by_bob] = await history(client, bob, room["id"])
    assert {r["emoji"] for r in seen_by_bob["reactions"] if r["me"]} == bob_has


async def test_events_live_on_a_room_mates_socket_and_on_resume(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    start = (await (await client.get(f"{ROOMS}/{room['id']}", headers=bob.headers)).json())[
        "last_pos"
    ]
    watcher = await Recorder(await connect(client, bob), bob.id, label="bob").live()
    ws = await connect(client, alice)
    await send_frame(
        ws,
        {
            "type": "react",
            "room_id": room["id"],
            "message_id": message["id"],
            "emoji": "🎉",
            "ref": "r1",
        },
    )
    ack = await next_of(ws, "ack")
    assert ack == {"type": "ack", "ref": "r1", "result": {"emoji": "🎉", "count": 1, "me": True}}
    await react(client, bob, message, "🎉")
    await send_frame(
        ws, {"type": "unreact", "room_id": room["id"], "message_id": message["id"], "emoji": "🎉"}
    )
    assert (await next_of(ws, "ack"))["result"] == {"emoji": "🎉", "count": 1, "me": False}
    await send_frame(
        ws,
        {
            "type": "react",
            "room_id": room["id"],
            "message_id": message["id"],
            "emoji": "nope",
            "ref": "r2",
        },
    )
    error = await next_of(ws, "error")
    assert error["ref"] == "r2" and error["code"] == "invalid_request"
    assert "emoji" in error["details"]["fields"]
    await watcher.wait_pos(room["id"], start + 3)
    live = [e for e in watcher.room_events() if e["room_id"] == room["id"]]
    expected = [
        ("reaction.added", alice.id, 1),
        ("reaction.added", bob.id, 2),
        ("reaction.removed", alice.id, 1),
    ]
    assert [(e["type"], e["user_id"], e["count"]) for e in live] == expected
    assert all(e["message_id"] == message["id"] and e["seq"] == message["seq"] for e in live)
    watcher.assert_clean()
    resumed_ws = await connect(client, bob, rooms={room["id"]: start}, via_frame=True)
    replay = Recorder(resumed_ws, bob.id, resumed={room["id"]: start}, label="resumed")
    await replay.wait_pos(room["id"], start + 3)
    assert [e for e in replay.room_events() if e["room_id"] == room["id"]] == live
    assert live == (await room_events(client, bob, room["id"], start))
    replay.assert_clean()
    await watcher.close()
    await replay.close()
    await ws.close()


async def test_history_pages_fill_reactions_in_one_extra_query(client, alice, bob, monkeypatch):
    room = await create_room(client, alice)
    await join(client, bob, room)
    messages = [await send(client, alice, room, f"m{i}") for i in range(5)]
    for message in messages[1:]:
        await react(client, bob, message, "👍")
    await react(client, alice, messages[2], "👍")
    engine = client.app[keys.DB].engine
    queries: list[str] = []
    original = engine.fetch

    async def counted(sql, *args):
        queries.append(sql)
        return await original(sql, *args)

    monkeypatch.setattr(engine, "fetch", counted)
    page = await history(client, alice, room["id"])
    assert sum("FROM reactions" in sql for sql in queries) == 1
    assert [m["reactions"] for m in page] == [
        [],
        [{"emoji": "👍", "count": 1, "me": False}],
        [{"emoji": "👍", "count": 2, "me": True}],
        [{"emoji": "👍", "count": 1, "me": False}],
        [{"emoji": "👍", "count": 1, "me": False}],
    ]
    queries.clear()
    await room_events(client, bob, room["id"])
    assert sum("FROM reactions" in sql for sql in queries) == 1
    by_bob = await history(client, bob, room["id"], "?limit=2")
    assert [m["reactions"][0]["me"] for m in by_bob] == [True, True]


@pytest.mark.parametrize("frame_type", ["react", "unreact"])
async def test_ws_reaction_in_a_room_not_joined_is_forbidden(client, alice, bob, frame_type):
    room = await create_room(client, alice)
    message = await send(client, alice, room)
    ws = await connect(client, bob)
    await send_frame(
        ws, {"type": frame_type, "room_id": room["id"], "message_id": message["id"], "emoji": "👍"}
    )
    assert (await next_of(ws, "error"))["code"] == "forbidden"
    await ws.close()


async def test_reactions_racing_a_kick_commit_before_it_or_not_at_all(client, alice, bob):
    room = await create_room(client, alice, kind="private")
    response = await client.post(
        f"{ROOMS}/{room['id']}/members", json={"user_id": bob.id}, headers=alice.headers
    )
    assert response.status == 201
    message = await send(client, alice, room)

    async def attempt(i: int) -> int:
        response = await client.put(
            reaction_path(room["id"], message["id"], f":r{i}:"), headers=bob.headers
        )
        return response.status

    async def kick() -> int:
        response = await client.delete(
            f"{ROOMS}/{room['id']}/members/{bob.id}", headers=alice.headers
        )
        return response.status

    *statuses, kicked = await asyncio.gather(*(attempt(i) for i in range(12)), kick())
    assert kicked == 204 and set(statuses) <= {200, 404}
    events = await room_events(client, alice, room["id"])
    [left] = [e for e in events if e["type"] == "member.left"]
    added = [e for e in events if e["type"] == "reaction.added"]
    assert len(added) == statuses.count(200)
    assert all(e["pos"] < left["pos"] for e in added)
    [seen] = await history(client, alice, room["id"])
    assert sum(r["count"] for r in seen["reactions"]) == len(added)


async def test_reacting_counts_against_the_message_rate(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, message_rate=Rate(3, 60))
    client = await aiohttp_client(create_app(config))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    message = await send(client, alice, room)  # 1
    await react(client, alice, message, "👍")  # 2
    await unreact(client, alice, message, "👍")  # 3
    error = await error_of(
        await client.put(reaction_path(room["id"], message["id"], "🎉"), headers=alice.headers),
        429,
    )
    assert error["code"] == "rate_limited"
    response = await client.post(
        f"{ROOMS}/{room['id']}/messages", json={"body": "more"}, headers=alice.headers
    )
    assert response.status == 429


async def test_a_retried_send_returns_the_message_with_its_reactions(client, alice, bob):
    """A repeated client_id answers with the stored message as it is now, reactions too."""
    room = await create_room(client, alice)
    await join(client, bob, room)
    sent = await send(client, alice, room, "once", client_id="retry-1")
    await react(client, bob, sent, "👍")
    await react(client, alice, sent, "👍")
    again = await send(client, alice, room, "once", client_id="retry-1")
    assert again["id"] == sent["id"]
    assert again["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
