"""Replies and threads (API.md "Conversation" and "Messages"), on both engines.

A reply's `thread_id` is its thread's first message, also for a reply to a reply;
that message carries `thread: {reply_count, last_reply_at}` wherever it is read
(history, the thread, replays); the thread endpoint pages the replies by seq.
"""

from __future__ import annotations

import asyncio

from .helpers import ROOMS, create_room, error_of, join, messages_path, send, signup
from .helpers.conversation import (
    delete,
    edit,
    get_json,
    message_path,
    messages_by_id,
    replayed_messages,
)
from .helpers.ws import Recorder, connect


def thread_path(message: dict, query: str = "") -> str:
    return message_path(message) + "/thread" + (f"?{query}" if query else "")


async def test_a_reply_to_a_reply_joins_the_first_messages_thread(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    root = await send(client, alice, room, "root")
    assert root["thread_id"] is None and root["thread"] is None
    first = await send(client, bob, room, "first reply", reply_to=root["id"])
    second = await send(client, alice, room, "reply to the reply", reply_to=first["id"])
    plain = await send(client, bob, room, "no reply")
    assert (first["reply_to"], first["thread_id"]) == (root["id"], root["id"])
    assert (second["reply_to"], second["thread_id"]) == (first["id"], root["id"])
    assert plain["thread_id"] is None and plain["thread"] is None
    read = await messages_by_id(client, bob, room)
    assert read[root["id"]]["thread"] == {"reply_count": 2, "last_reply_at": second["created_at"]}
    assert read[root["id"]]["thread_id"] is None
    # Only a thread's first message carries its summary.
    assert read[first["id"]]["thread"] is None and read[first["id"]]["thread_id"] == root["id"]
    assert read[second["id"]] == second
    assert read[plain["id"]]["thread"] is None


async def test_a_reply_to_a_message_of_another_room_or_none_is_400_naming_reply_to(
    client, alice, bob
):
    room = await create_room(client, alice)
    other = await create_room(client, alice, name="other")
    elsewhere = await send(client, alice, other, "elsewhere")
    for reply_to in (elsewhere["id"], elsewhere["id"] + 1000):
        response = await client.post(
            messages_path(room), json={"body": "hi", "reply_to": reply_to}, headers=alice.headers
        )
        error = await error_of(response, 400)
        assert set(error["details"]["fields"]) == {"reply_to"}
    # Nothing was numbered or counted by the refused replies.
    after = await send(client, alice, room, "next")
    assert after["seq"] == 1
    assert (await messages_by_id(client, alice, other))[elsewhere["id"]]["thread"] is None
    # A non-member's reply is refused for the membership, before its reply_to is looked at.
    response = await client.post(
        messages_path(room), json={"body": "hi", "reply_to": after["id"]}, headers=bob.headers
    )
    await error_of(response, 403)


async def test_the_thread_pages_its_replies_by_seq(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    root = await send(client, alice, room, "root")
    replies = []
    for i in range(5):
        await send(client, bob, room, f"between {i}")
        parent = replies[-1] if replies else root
        replies.append(await send(client, bob, room, f"reply {i}", reply_to=parent["id"]))
    await delete(client, bob, replies[1])
    first = await get_json(client, alice, thread_path(root, "limit=2"))
    assert [m["id"] for m in first["items"]] == [r["id"] for r in replies[:2]]
    assert first["has_more"] is True
    # A deleted reply stays in its thread as a tombstone, and in the count.
    assert first["items"][1]["deleted"] is True and first["items"][1]["body"] == ""
    rest = await get_json(
        client, alice, thread_path(root, f"after_seq={first['items'][-1]['seq']}&limit=2")
    )
    last = await get_json(
        client, alice, thread_path(root, f"after_seq={rest['items'][-1]['seq']}&limit=2")
    )
    assert [m["id"] for m in rest["items"] + last["items"]] == [r["id"] for r in replies[2:]]
    assert (rest["has_more"], last["has_more"]) == (True, False)
    assert all(m["thread_id"] == root["id"] for m in first["items"] + rest["items"])
    summary = (await messages_by_id(client, alice, room))[root["id"]]["thread"]
    assert summary == {"reply_count": 5, "last_reply_at": replies[-1]["created_at"]}
    # Asked for by one of its replies, a thread is the same thread.
    by_reply = await get_json(client, alice, thread_path(replies[3]))
    assert [m["id"] for m in by_reply["items"]] == [r["id"] for r in replies]
    # A message without replies has an empty thread.
    lonely = await get_json(client, alice, thread_path(await send(client, alice, room, "x")))
    assert lonely == {"items": [], "has_more": False}


async def test_the_thread_is_visible_as_the_history_is(client, alice, bob):
    carol = await signup(client, "carol")
    public = await create_room(client, alice)
    private = await create_room(client, alice, name="private", kind="private")
    root = await send(client, alice, public, "root")
    await send(client, alice, public, "reply", reply_to=root["id"])
    secret = await send(client, alice, private, "secret")
    # A public room's thread is readable by anyone signed in, a private one's only by members.
    assert len((await get_json(client, carol, thread_path(root)))["items"]) == 1
    await error_of(await client.get(thread_path(secret), headers=bob.headers), 404)
    # A message id of another room, or of none, is no thread of this room.
    elsewhere = secret | {"room_id": public["id"]}
    await error_of(await client.get(thread_path(elsewhere), headers=alice.headers), 404)
    bad = await client.get(thread_path(root, "after_seq=-1"), headers=alice.headers)
    assert set((await error_of(bad, 400))["details"]["fields"]) == {"after_seq"}


async def test_replies_are_live_and_summaries_replayed_as_in_history(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    watcher = await Recorder(await connect(client, bob), bob.id).live()
    root = await send(client, alice, room, "root")
    reply = await send(client, bob, room, "reply", reply_to=root["id"])
    await watcher.wait_for(lambda r: r.has_message(reply["id"]), what="the reply")
    live = {f["message"]["id"]: f["message"] for f in watcher.of_type("message.new")}
    assert live[reply["id"]]["thread_id"] == root["id"]
    # Replies are plain message.new events; the summary is read, or replayed, from the rows.
    assert live[root["id"]]["thread"] is None
    watcher.assert_clean()
    await watcher.close()
    read = await messages_by_id(client, bob, room)
    assert read[root["id"]]["thread"]["reply_count"] == 1
    assert await replayed_messages(client, bob, room) == read
    events = await get_json(client, bob, f"{ROOMS}/{room['id']}/events")
    stored = {e["message"]["id"]: e["message"] for e in events["items"] if "message" in e}
    assert stored == read


async def test_concurrent_replies_and_edits_of_the_first_message_all_commit(client, alice, bob):
    # A reply locks the thread's first message before the room, as an edit does:
    # replies racing edits of that message neither deadlock nor lose a count.
    room = await create_room(client, alice)
    await join(client, bob, room)
    root = await send(client, alice, room, "root")
    replies = [send(client, bob, room, f"reply {i} @alice", reply_to=root["id"]) for i in range(12)]
    edits = [edit(client, alice, root, f"root, take {i}") for i in range(6)]
    done = await asyncio.gather(*replies, *edits)
    sent = done[: len(replies)]
    read = await messages_by_id(client, alice, room)
    assert sorted(m["seq"] for m in read.values()) == list(range(1, 14))
    assert read[root["id"]]["thread"] == {
        "reply_count": 12,
        "last_reply_at": max(m["created_at"] for m in sent),
    }
    assert all(read[m["id"]]["mentions"]["user_ids"] == [alice.id] for m in sent)
