"""The room stream (API.md "Room stream" and "WebSocket"), in process, on both engines.

Every change to a room is a room event numbered by `pos`; connections deliver a
room's events in `pos` order with no hole or duplicate, hold all of them until
the first frame after `ready`, resume without rewinding, and stop at the user's
own removal. Replays and `GET /rooms/{id}/events` are built from current rows.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from chat_server import create_app

from .helpers import ROOMS, create_room, error_of, join, make_config, messages_path, send, signup
from .helpers.ws import Recorder, connect, event_key, fold_members, fold_messages, page_events

# A short hold keeps tests that do not resume quick; no assertion depends on it.
HOLD = 0.2
# The hold tests need one long enough to act inside it on a slow machine.
LONG_HOLD = 3.0


@pytest.fixture
def config(tmp_path, database_url):
    return make_config(tmp_path, database_url, ready_hold=HOLD)


def events_path(room_id: int, query: str = "") -> str:
    return f"{ROOMS}/{room_id}/events" + (f"?{query}" if query else "")


async def stored_events(client, account, room_id: int, after_pos: int = 0) -> list[dict]:
    async def fetch(path: str) -> dict:
        response = await client.get(path, headers=account.headers)
        assert response.status == 200, await response.text()
        return await response.json()

    return await page_events(fetch, room_id, after_pos)


async def follow(client, account, **connect_args) -> Recorder:
    """A recorded connection whose hold is over: it receives live events from `ready` on."""
    ws = await connect(client, account, **connect_args)
    return await Recorder(ws, account.id, label=account.user["username"]).live()


async def last_pos(client, account, room_id: int) -> int:
    response = await client.get(f"{ROOMS}/{room_id}", headers=account.headers)
    assert response.status == 200, await response.text()
    return (await response.json())["last_pos"]


async def add_member(client, by, room, user, role: str = "member") -> int:
    response = await client.post(
        f"{ROOMS}/{room['id']}/members", json={"user_id": user.id, "role": role}, headers=by.headers
    )
    return response.status


async def kick(client, by, room, user) -> int:
    response = await client.delete(f"{ROOMS}/{room['id']}/members/{user.id}", headers=by.headers)
    return response.status


def message_path(message: dict) -> str:
    return f"{ROOMS}/{message['room_id']}/messages/{message['id']}"


async def edit(client, account, message: dict, body: str) -> None:
    response = await client.patch(
        message_path(message), json={"body": body}, headers=account.headers
    )
    assert response.status == 200, await response.text()


async def delete(client, account, message: dict) -> None:
    response = await client.delete(message_path(message), headers=account.headers)
    assert response.status == 204, await response.text()


async def patch_room(client, account, room, **fields) -> None:
    response = await client.patch(f"{ROOMS}/{room['id']}", json=fields, headers=account.headers)
    assert response.status == 200, await response.text()


async def leave(client, account, room) -> None:
    response = await client.post(f"{ROOMS}/{room['id']}/leave", headers=account.headers)
    assert response.status == 204, await response.text()


# --- numbering -------------------------------------------------------------------------


async def test_rooms_and_ready_carry_last_pos(client, alice, bob):
    room = await create_room(client, alice)
    assert room["last_pos"] == 1  # the owner's member.joined
    await join(client, bob, room)
    await send(client, alice, room, "one")
    assert await last_pos(client, bob, room["id"]) == 3
    mine = await (await client.get(ROOMS, headers=alice.headers)).json()
    assert [(r["id"], r["last_seq"], r["last_pos"]) for r in mine["items"]] == [(room["id"], 1, 3)]
    ws = await connect(client, bob)
    assert ws.ready["rooms"] == [{"room_id": room["id"], "last_seq": 1, "last_pos": 3}]
    stored = await stored_events(client, bob, room["id"])
    assert [(e["pos"], e["type"], e["room_id"]) for e in stored] == [
        (1, "member.joined", room["id"]),
        (2, "member.joined", room["id"]),
        (3, "message.new", room["id"]),
    ]
    owner, joined, message = stored
    assert owner["user"]["id"] == alice.id and owner["role"] == "owner"
    assert owner["by"] in (None, alice.id)
    assert joined["user"]["id"] == bob.id and joined["role"] == "member"
    assert joined["by"] in (None, bob.id)
    assert message["message"]["body"] == "one" and message["message"]["seq"] == 1


async def test_a_dm_starts_with_its_two_members_joined(client, alice, bob):
    response = await client.post("/api/v1/dm", json={"user_id": bob.id}, headers=alice.headers)
    assert response.status == 201, await response.text()
    dm = await response.json()
    assert dm["last_pos"] == 2
    stored = await stored_events(client, bob, dm["id"])
    assert [(e["pos"], e["type"]) for e in stored] == [(1, "member.joined"), (2, "member.joined")]
    assert {e["user"]["id"] for e in stored} == {alice.id, bob.id}


async def test_every_change_is_a_room_event_with_the_next_pos(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice)
    watcher = await follow(client, alice)
    await join(client, bob, room)  # 2
    assert await add_member(client, alice, room, carol, role="admin") == 201  # 3
    kept = await send(client, bob, room, "draft")  # 4
    await edit(client, bob, kept, "final")  # 5
    doomed = await send(client, bob, room, "doomed")  # 6
    await delete(client, alice, doomed)  # 7
    await patch_room(client, alice, room, topic="new topic")  # 8
    await leave(client, bob, room)  # 9
    assert await kick(client, alice, room, carol) == 204  # 10
    await watcher.wait_pos(room["id"], 10)
    live = watcher.events[room["id"]]
    expected = [
        (2, "member.joined", bob.id),
        (3, "member.joined", carol.id),
        (4, "message.new", kept["id"]),
        (5, "message.edited", kept["id"]),
        (6, "message.new", doomed["id"]),
        (7, "message.deleted", doomed["id"]),
        (8, "room.updated", room["id"]),
        (9, "member.left", bob.id),
        (10, "member.left", carol.id),
    ]
    assert [event_key(e) for e in live] == expected
    stored = await stored_events(client, alice, room["id"])
    assert [event_key(e) for e in stored] == [(1, "member.joined", alice.id), *expected]
    for events in (live, stored[1:]):
        bob_joined, carol_joined, new, edited, _, deleted, updated, left, kicked = events
        assert bob_joined["role"] == "member" and bob_joined["by"] in (None, bob.id)
        assert carol_joined["role"] == "admin" and carol_joined["by"] == alice.id
        assert new["room_id"] == room["id"] and new["message"]["room_id"] == room["id"]
        assert edited["message"]["body"] == "final" and edited["message"]["edited_at"]
        assert deleted["message"]["body"] == "" and deleted["message"]["deleted"] is True
        assert updated["room"]["id"] == room["id"] and updated["room"]["topic"] == "new topic"
        assert left["user"]["id"] == bob.id and left["reason"] == "left"
        assert kicked["user"]["id"] == carol.id and kicked["reason"] == "kicked"
    assert live[2]["message"]["body"] in ("draft", "final")  # live: as sent, or as now
    assert stored[3]["message"]["body"] == "final"  # read back: as it is now
    assert stored[5]["message"]["body"] == "" and stored[5]["message"]["deleted"] is True
    assert "doomed" not in json.dumps(stored)
    watcher.assert_clean()


# --- GET /rooms/{id}/events -------------------------------------------------------------


async def test_events_page_by_pos_for_members_only(client, alice, bob):
    room = await create_room(client, alice)
    for i in range(74):
        await send(client, alice, room, f"m{i}")  # pos 2..75

    async def page(query: str) -> tuple[list[int], bool]:
        response = await client.get(events_path(room["id"], query), headers=alice.headers)
        body = await response.json()
        assert response.status == 200, body
        return [e["pos"] for e in body["items"]], body["has_more"]

    assert await page("after_pos=0") == (list(range(1, 51)), True)
    assert await page("after_pos=50") == (list(range(51, 76)), False)
    assert await page("after_pos=10&limit=5") == (list(range(11, 16)), True)
    before, more = await page("before_pos=20&limit=5")
    assert len(before) == 5 and before == list(range(before[0], before[0] + 5)) and more
    assert before[-1] < 20
    assert await page("after_pos=10&before_pos=14") == ([11, 12, 13], False)
    assert await page("after_pos=75") == ([], False)
    assert (
        await stored_events(client, alice, room["id"], after_pos=70)
        == (await stored_events(client, alice, room["id"]))[70:]
    )

    private = await create_room(client, alice, name="secret", kind="private")
    await error_of(await client.get(events_path(private["id"]), headers=bob.headers), 404)
    await error_of(await client.get(events_path(99999), headers=alice.headers), 404)
    outsider = await client.get(events_path(room["id"]), headers=bob.headers)
    assert outsider.status in (403, 404), await outsider.text()
    for query, field in [
        ("after_pos=-1", "after_pos"),
        ("after_pos=x", "after_pos"),
        ("before_pos=-3", "before_pos"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
    ]:
        error = await error_of(
            await client.get(events_path(room["id"], query), headers=alice.headers), 400
        )
        assert field in error["details"]["fields"], query


async def test_replays_are_built_from_current_rows(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    secret = await send(client, alice, room, "secret words")  # 3
    kept = await send(client, alice, room, "draft")  # 4
    await edit(client, alice, kept, "final words")  # 5
    await delete(client, alice, secret)  # 6
    stored = await stored_events(client, bob, room["id"])
    by_pos = {e["pos"]: e for e in stored}
    assert by_pos[3]["type"] == "message.new" and by_pos[3]["message"]["id"] == secret["id"]
    assert by_pos[3]["message"]["body"] == "" and by_pos[3]["message"]["deleted"] is True
    assert by_pos[4]["message"]["body"] == "final words"  # as it is now
    assert by_pos[6]["type"] == "message.deleted"
    rooms = {room["id"]: 0}
    replay = Recorder(await connect(client, bob, via_frame=True, rooms=rooms), bob.id, rooms)
    await replay.wait_for(lambda r: r.of_type("resumed"), what="resumed")
    assert [event_key(e) for e in replay.events[room["id"]]] == [event_key(e) for e in stored]
    assert fold_messages(replay.events[room["id"]]) == fold_messages(stored)
    assert [e["message"] for e in replay.events[room["id"]] if "message" in e] == [
        e["message"] for e in stored if "message" in e
    ]
    responses = [
        await (await client.get(events_path(room["id"]), headers=bob.headers)).text(),
        await (await client.get(messages_path(room), headers=bob.headers)).text(),
        replay.text(),
    ]
    assert not any("secret words" in text for text in responses)
    replay.assert_clean()


# --- the hold, resume ------------------------------------------------------------------


async def test_the_hold_covers_every_room_event_type(aiohttp_client, tmp_path, database_url):
    client = await aiohttp_client(
        create_app(make_config(tmp_path, database_url, ready_hold=LONG_HOLD))
    )
    alice, bob, carol = [await signup(client, name) for name in ("alice", "bob", "carol")]
    room = await create_room(client, alice)
    await join(client, bob, room)
    one = await send(client, alice, room, "one")
    two = await send(client, alice, room, "two")
    start = await last_pos(client, alice, room["id"])  # 4
    opened = time.monotonic()
    silent = Recorder(await connect(client, bob), bob.id, label="silent")
    resuming = Recorder(await connect(client, bob), bob.id, label="resuming")
    # Every kind of room event, live, while both connections are held.
    await edit(client, alice, one, "one, edited")
    await delete(client, alice, two)
    await join(client, carol, room)
    await patch_room(client, alice, room, topic="held")
    await leave(client, carol, room)
    await send(client, alice, room, "three")
    end = start + 6
    assert time.monotonic() - opened < LONG_HOLD / 2, "too slow to test inside the hold"
    for recorder in (silent, resuming):
        assert recorder.room_events() == [], recorder.label
    types = [
        "message.edited",
        "message.deleted",
        "member.joined",
        "room.updated",
        "member.left",
        "message.new",
    ]

    await resuming.resume({room["id"]: start - 2})
    await resuming.wait_pos(room["id"], end)
    replayed = resuming.events[room["id"]]
    assert [e["pos"] for e in replayed] == list(range(start - 1, end + 1))
    assert [e["type"] for e in replayed[2:]] == types
    assert replayed[1]["message"]["deleted"] is True  # `two`, replayed as it is now

    await silent.wait_pos(room["id"], end, timeout=LONG_HOLD + 10)
    first_arrival = next(t for t, f in silent.frames if f["type"] in set(types))
    assert first_arrival - opened >= LONG_HOLD * 0.9
    assert [e["pos"] for e in silent.events[room["id"]]] == list(range(start + 1, end + 1))
    assert [e["type"] for e in silent.events[room["id"]]] == types
    for recorder in (silent, resuming):
        recorder.assert_clean()
        assert '"body": "two"' not in recorder.text()


async def test_resume_after_changes_while_away_ends_equal_to_the_stream(client, alice, bob):
    carol, dave = await signup(client, "carol"), await signup(client, "dave")
    room = await create_room(client, alice)
    await join(client, bob, room)
    first = await send(client, alice, room, "first")
    second = await send(client, alice, room, "second")
    rooms = {room["id"]: 0}
    before = Recorder(await connect(client, bob, via_frame=True, rooms=rooms), bob.id, rooms)
    await before.wait_for(lambda r: r.of_type("resumed"), what="resumed")
    await edit(client, alice, first, "first, edited")
    await before.wait_pos(room["id"], await last_pos(client, alice, room["id"]))
    await before.close()
    # While bob is away:
    fourth = await send(client, alice, room, "fourth")
    await edit(client, alice, first, "first, edited again")
    await edit(client, alice, fourth, "fourth, edited")
    await delete(client, alice, second)
    await delete(client, alice, fourth)
    await join(client, carol, room)
    assert await add_member(client, alice, room, dave) == 201
    await leave(client, carol, room)
    assert await kick(client, alice, room, dave) == 204
    await patch_room(client, alice, room, name="renamed")
    await send(client, alice, room, "fifth")
    end = await last_pos(client, alice, room["id"])

    after = Recorder(await connect(client, bob), bob.id)
    await after.resume({room["id"]: before.high[room["id"]]})
    await after.wait_pos(room["id"], end)
    view = before.events[room["id"]] + after.events[room["id"]]
    stored = await stored_events(client, bob, room["id"])
    assert [event_key(e) for e in view] == [event_key(e) for e in stored]
    assert fold_messages(view) == fold_messages(stored)
    assert fold_members(view) == fold_members(stored) == {alice.id, bob.id}
    assert "second" not in after.text() and "fourth" not in after.text()
    before.assert_clean()
    after.assert_clean()


async def test_a_late_resume_never_rewinds(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    for i in range(3):
        await send(client, alice, room, f"early {i}")  # 3..5
    ws = await follow(client, bob)
    await send(client, alice, room, "six")
    await send(client, alice, room, "seven")
    await ws.wait_pos(room["id"], 7)
    await ws.resume({room["id"]: 2})
    await send(client, alice, room, "eight")
    await ws.wait_pos(room["id"], 8)
    assert [e["pos"] for e in ws.room_events()] == [6, 7, 8]
    (gap,) = ws.of_type("gap")
    assert gap["room_id"] == room["id"] and gap["from_pos"] == 3
    assert 3 <= gap["to_pos"] <= 7
    ws.assert_clean()


async def test_a_resume_from_before_a_rejoin_skips_the_time_away(client, alice, bob):
    room = await create_room(client, alice, kind="private")
    assert await add_member(client, alice, room, bob) == 201
    await send(client, alice, room, "while bob is in")
    seen = await last_pos(client, alice, room["id"])
    await leave(client, bob, room)
    await send(client, alice, room, "secret: bob is out")
    assert await add_member(client, alice, room, bob) == 201
    back_at = await last_pos(client, alice, room["id"])
    await send(client, alice, room, "bob is back")
    ws = Recorder(await connect(client, bob), bob.id)
    await ws.resume({room["id"]: seen})  # the client last saw the room before it left
    await ws.wait_pos(room["id"], back_at + 1)
    # Its own leaving, then on from its rejoin: nothing of the time away.
    assert [e["pos"] for e in ws.room_events()] == [seen + 1, back_at, back_at + 1]
    assert "secret" not in ws.text()
    ws.assert_clean()


# --- removal --------------------------------------------------------------------------


async def test_a_kicked_member_hears_its_removal_and_nothing_after(client, alice, bob):
    room = await create_room(client, alice, name="secret", kind="private")
    assert await add_member(client, alice, room, bob) == 201
    owner, victim = await follow(client, alice), await follow(client, bob)
    await send(client, alice, room, "before")
    await victim.wait_pos(room["id"], 3)
    assert await kick(client, alice, room, bob) == 204
    await victim.wait_for(
        lambda r: r.has("room.removed") and r.events[room["id"]][-1]["type"] == "member.left",
        what="told of the kick",
    )
    left = victim.events[room["id"]][-1]
    assert left["user"]["id"] == bob.id and left["reason"] == "kicked" and left["pos"] == 4
    assert victim.of_type("room.removed")[0]["room"]["id"] == room["id"]
    for i in range(3):
        await send(client, alice, room, f"after the kick {i}")
    await owner.wait_pos(room["id"], 7)
    await victim.live()  # a round trip: whatever was written to bob before it has arrived
    assert victim.events[room["id"]][-1]["pos"] == 4
    assert "after the kick" not in victim.text()
    victim.assert_clean()
    owner.assert_clean()


async def test_a_removed_member_cannot_send_or_edit(client, alice, bob):
    room = await create_room(client, alice, name="secret", kind="private")
    assert await add_member(client, alice, room, bob) == 201
    mine = await send(client, bob, room, "mine")
    socket = await follow(client, bob)
    assert await kick(client, alice, room, bob) == 204
    response = await client.post(messages_path(room), json={"body": "x"}, headers=bob.headers)
    assert response.status in (403, 404), await response.text()
    response = await client.patch(
        f"{messages_path(room)}/{mine['id']}", json={"body": "changed"}, headers=bob.headers
    )
    assert response.status in (403, 404), await response.text()
    await socket.ws.send_json({"type": "send", "room_id": room["id"], "body": "x", "ref": "k"})
    await socket.wait_for(lambda r: r.has("error", ref="k"), what="refused")
    assert socket.of_type("error")[0]["code"] in ("not_found", "forbidden")
    stored = await stored_events(client, alice, room["id"])
    assert stored[-1]["type"] == "member.left" and stored[-1]["user"]["id"] == bob.id
    assert [e["message"]["body"] for e in stored if e["type"] == "message.new"] == ["mine"]
    assert [e["message"]["body"] for e in stored if e["type"] == "message.edited"] == []


async def test_sends_racing_a_kick_commit_before_it_or_not_at_all(client, alice, bob):
    async def post(room: dict, n: int) -> int:
        response = await client.post(
            messages_path(room), json={"body": f"racing {n}"}, headers=bob.headers
        )
        return response.status

    for attempt in range(3):
        room = await create_room(client, alice, name=f"race {attempt}", kind="private")
        assert await add_member(client, alice, room, bob) == 201
        answers = await asyncio.gather(
            *(post(room, n) for n in range(10)),
            kick(client, alice, room, bob),
            *(post(room, n) for n in range(10, 20)),
        )
        kicked = answers.pop(10)
        assert kicked == 204
        assert set(answers) <= {201, 403, 404}, answers
        stored = await stored_events(client, alice, room["id"])
        (removal,) = [e for e in stored if e["type"] == "member.left"]
        sent = [e for e in stored if e["type"] == "message.new"]
        assert len(sent) == answers.count(201)
        assert all(e["pos"] < removal["pos"] for e in sent), [event_key(e) for e in stored]


# --- membership races ------------------------------------------------------------------


async def test_concurrent_joins_and_adds_end_in_the_constraint(client, alice, bob):
    carol = await signup(client, "carol")
    rooms = [await create_room(client, alice, name=f"room {i}") for i in range(10)]

    async def join_status(room) -> int:
        response = await client.post(f"{ROOMS}/{room['id']}/join", headers=bob.headers)
        return response.status

    statuses = await asyncio.gather(*(join_status(room) for room in rooms for _ in range(4)))
    assert statuses == [200] * 40
    for room in rooms:
        stored = await stored_events(client, alice, room["id"])
        assert [event_key(e) for e in stored] == [
            (1, "member.joined", alice.id),
            (2, "member.joined", bob.id),
        ]
    private = await create_room(client, alice, name="secret", kind="private")
    adds = await asyncio.gather(*(add_member(client, alice, private, carol) for _ in range(4)))
    assert sorted(adds) == [201, 409, 409, 409]
    stored = await stored_events(client, alice, private["id"])
    assert [event_key(e) for e in stored] == [
        (1, "member.joined", alice.id),
        (2, "member.joined", carol.id),
    ]
    members = await (
        await client.get(f"{ROOMS}/{private['id']}/members", headers=alice.headers)
    ).json()
    assert sorted(m["user"]["id"] for m in members["items"]) == sorted([alice.id, carol.id])
