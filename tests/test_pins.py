"""Pins (API.md "Conversation"), on both engines: who may pin, idempotency, the cap,
order, membership, deletion, and the room events live (reactions as each member sees
them) and replayed."""

from __future__ import annotations

from .helpers import ROOMS, create_room, error_of, join, send
from .helpers.conversation import history, pin, pins, react, room_events, unpin
from .helpers.ws import Recorder, connect


async def open_dm(client, account, other) -> dict:
    response = await client.post("/api/v1/dm", json={"user_id": other.id}, headers=account.headers)
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def test_managers_pin_once_and_unpin(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, bob, room)
    assert (await pin(client, bob, message, status=403))["error"]["code"] == "forbidden"
    pinned = await pin(client, alice, message)
    assert pinned == message | {"pinned": True}
    assert await pin(client, alice, message) == pinned  # again: nothing new
    events = await room_events(client, bob, room["id"])
    assert [(e["type"], e.get("by")) for e in events[-2:]] == [
        ("message.new", None),
        ("message.pinned", alice.id),
    ]
    [seen] = await history(client, bob, room["id"])
    assert seen["pinned"] is True
    assert await pins(client, bob, room["id"]) == [seen]
    assert await unpin(client, bob, message) == 403
    assert await unpin(client, alice, message) == 204
    assert await unpin(client, alice, message) == 404
    assert await pins(client, bob, room["id"]) == []
    kinds = [e["type"] for e in await room_events(client, bob, room["id"])]
    assert kinds[-2:] == ["message.pinned", "message.unpinned"]
    body = await (
        await client.post(f"{ROOMS}/{room['id']}/pins", json={}, headers=alice.headers)
    ).json()
    assert "message_id" in body["error"]["details"]["fields"]


async def test_anyone_in_a_dm_pins(client, alice, bob):
    dm = await open_dm(client, alice, bob)
    message = await send(client, alice, dm)
    assert (await pin(client, bob, message))["pinned"] is True
    assert await unpin(client, alice, message) == 204


async def test_pins_list_newest_pin_first_and_at_most_fifty(client, alice):
    room = await create_room(client, alice)
    messages = [await send(client, alice, room, f"m{i}") for i in range(51)]
    order = messages[:50]
    order.reverse()  # pinned from the newest message back: the oldest pin is the newest message
    for message in order:
        await pin(client, alice, message)
    listed = await pins(client, alice, room["id"])
    assert [m["id"] for m in listed] == [m["id"] for m in messages[:50]]
    error = (await pin(client, alice, messages[50], status=409))["error"]
    assert error["code"] == "conflict"
    assert await pin(client, alice, messages[0]) == listed[0]  # pinned already: fine at the cap
    assert await unpin(client, alice, messages[10]) == 204
    await pin(client, alice, messages[50])
    assert (await pins(client, alice, room["id"]))[0]["id"] == messages[50]["id"]


async def test_pinning_in_a_room_left_commits_nothing(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    private = await create_room(client, alice, name="inner", kind="private")
    hidden = await send(client, alice, private)
    assert (await pin(client, bob, hidden, status=404))["error"]["code"] == "not_found"
    message = await send(client, alice, room)
    response = await client.post(f"{ROOMS}/{room['id']}/leave", headers=bob.headers)
    assert response.status == 204
    before = await room_events(client, alice, room["id"])
    assert (await pin(client, bob, message, status=403))["error"]["code"] == "forbidden"
    assert await room_events(client, alice, room["id"]) == before
    assert await unpin(client, bob, message) == 403
    # Kicked from a private room (a DM cannot be left): hidden again, 404, nothing committed.
    members = f"{ROOMS}/{private['id']}/members"
    response = await client.post(members, json={"user_id": bob.id}, headers=alice.headers)
    assert response.status == 201
    response = await client.delete(f"{members}/{bob.id}", headers=alice.headers)
    assert response.status == 204
    before = await room_events(client, alice, private["id"])
    assert (await pin(client, bob, hidden, status=404))["error"]["code"] == "not_found"
    assert await room_events(client, alice, private["id"]) == before


async def test_a_deleted_message_loses_its_pin(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, bob, room)
    await pin(client, alice, message)
    response = await client.delete(
        f"{ROOMS}/{room['id']}/messages/{message['id']}", headers=bob.headers
    )
    assert response.status == 204
    assert await pins(client, alice, room["id"]) == []
    await error_of(
        await client.post(
            f"{ROOMS}/{room['id']}/pins", json={"message_id": message["id"]}, headers=alice.headers
        ),
        404,
    )
    assert await unpin(client, alice, message) == 404
    events = await room_events(client, alice, room["id"])
    assert [e["type"] for e in events[-2:]] == ["message.pinned", "message.deleted"]
    assert events[-2]["message"]["deleted"] and not events[-2]["message"]["pinned"]


async def test_pin_events_live_with_each_members_reactions_and_on_resume(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    await react(client, bob, message, "👍")
    start = (await (await client.get(f"{ROOMS}/{room['id']}", headers=bob.headers)).json())[
        "last_pos"
    ]
    watchers = {
        account.id: await Recorder(await connect(client, account), account.id).live()
        for account in (alice, bob)
    }
    await pin(client, alice, message)
    for watcher in watchers.values():  # a live event reads the message as it is when delivered
        await watcher.wait_pos(room["id"], start + 1)
    assert await unpin(client, alice, message) == 204
    for user_id, watcher in watchers.items():
        await watcher.wait_pos(room["id"], start + 2)
        live = [e for e in watcher.room_events() if e["room_id"] == room["id"]]
        assert [(e["type"], e["by"], e["message"]["pinned"]) for e in live] == [
            ("message.pinned", alice.id, True),
            ("message.unpinned", alice.id, False),
        ]
        me = user_id == bob.id
        assert all(
            e["message"]["reactions"] == [{"emoji": "👍", "count": 1, "me": me}] for e in live
        )
        watcher.assert_clean()
        await watcher.close()
    resumed = Recorder(
        await connect(client, bob, rooms={room["id"]: start}, via_frame=True),
        bob.id,
        resumed={room["id"]: start},
    )
    await resumed.wait_pos(room["id"], start + 2)
    replayed = [e for e in resumed.room_events() if e["room_id"] == room["id"]]
    assert [(e["type"], e["by"]) for e in replayed] == [
        ("message.pinned", alice.id),
        ("message.unpinned", alice.id),
    ]
    # Replays carry the message as it is now: unpinned.
    assert all(not e["message"]["pinned"] for e in replayed)
    resumed.assert_clean()
    await resumed.close()


async def test_an_edit_reaches_each_member_with_their_own_reactions(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room)
    await react(client, bob, message, "👍")
    watchers = [await Recorder(await connect(client, a), a.id).live() for a in (alice, bob)]
    response = await client.patch(
        f"{ROOMS}/{room['id']}/messages/{message['id']}",
        json={"body": "edited"},
        headers=alice.headers,
    )
    assert response.status == 200
    assert (await response.json())["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]
    for watcher, me in zip(watchers, (False, True), strict=True):
        await watcher.wait_for(lambda r: r.has("message.edited"), what="the edit")
        [edited] = watcher.of_type("message.edited")
        assert edited["message"]["body"] == "edited"
        assert edited["message"]["reactions"] == [{"emoji": "👍", "count": 1, "me": me}]
        watcher.assert_clean()
        await watcher.close()
