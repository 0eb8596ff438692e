"""Queries that must not grow with data they do not return, on both engines:
kept member counts, search paging, and batched reads (API.md behaviour unchanged)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chat_server import keys, migrations
from chat_server.db import Database

from .helpers import ROOMS, Account, create_room, join, send, signup
from .helpers.integrations import make_bot
from .helpers.moderation import make_admin
from .helpers.postgres import scratch_database
from .helpers.ws import connect, next_of, receive
from .helpers.ws import send as send_frame

API = "/api/v1"


async def assert_member_counts_exact(client: TestClient) -> None:
    """Every room's `member_count` column equals its member rows, and the API says so."""
    rows = await client.app[keys.DB].engine.fetch(
        "SELECT r.id, r.member_count, (SELECT count(*) FROM members mb"
        " WHERE mb.room_id = r.id) AS real_count FROM rooms r ORDER BY r.id"
    )
    assert rows, "no rooms"
    assert [(r["id"], r["member_count"]) for r in rows] == [
        (r["id"], r["real_count"]) for r in rows
    ]


async def room_seen_by(client: TestClient, account: Account, room_id: int) -> dict[str, Any]:
    response = await client.get(f"{ROOMS}/{room_id}", headers=account.headers)
    assert response.status == 200
    return await response.json()


def record_reads(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every read the engine runs from now on, in order (the engine's
    own reads are counted, not replaced)."""
    engine = client.app[keys.DB].engine
    queries: list[str] = []
    original = engine.fetch

    async def counted(sql: str, *args: Any) -> Any:
        queries.append(sql)
        return await original(sql, *args)

    monkeypatch.setattr(engine, "fetch", counted)
    return queries


async def test_member_count_follows_every_membership_change(client, alice, bob):
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    await make_admin(client, alice)
    room = await create_room(client, alice, name="counted")
    other = await create_room(client, bob, name="bobs")
    await assert_member_counts_exact(client)
    dm = await client.post(f"{API}/dm", json={"user_id": bob.id}, headers=alice.headers)
    assert dm.status in (200, 201)
    await assert_member_counts_exact(client)

    await join(client, bob, room)  # join
    await join(client, carol, other)
    added = await client.post(
        f"{ROOMS}/{room['id']}/members", json={"user_id": carol.id}, headers=alice.headers
    )
    assert added.status in (200, 201)  # add
    await join(client, dave, room)
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, bob, room["id"]))["member_count"] == 4

    left = await client.post(f"{ROOMS}/{room['id']}/leave", headers=dave.headers)
    assert left.status == 204  # leave
    await assert_member_counts_exact(client)
    kicked = await client.delete(f"{ROOMS}/{room['id']}/members/{carol.id}", headers=alice.headers)
    assert kicked.status == 204  # kick
    await assert_member_counts_exact(client)
    banned = await client.post(
        f"{ROOMS}/{room['id']}/bans", json={"user_id": bob.id}, headers=alice.headers
    )
    assert banned.status == 201  # ban
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, alice, room["id"]))["member_count"] == 1

    bot = await make_bot(client, carol)
    await client.app[keys.DB].add_member(other["id"], bot.id, "member", None)
    await assert_member_counts_exact(client)
    gone = await client.delete(f"{API}/bots/{bot.id}", headers=carol.headers)
    assert gone.status == 204  # a bot's deletion is its deactivation
    await assert_member_counts_exact(client)
    deactivated = await client.patch(
        f"{API}/admin/users/{carol.id}", json={"deactivated": True}, headers=alice.headers
    )
    assert deactivated.status == 200  # deactivation
    await assert_member_counts_exact(client)
    erased = await client.post(f"{API}/admin/users/{bob.id}/erase", headers=alice.headers)
    assert erased.status == 202  # erasure (bob was in his room and the DM)
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, alice, other["id"]))["member_count"] == 0

    deleted = await client.delete(f"{ROOMS}/{room['id']}", headers=alice.headers)
    assert deleted.status == 204  # room deletion
    await assert_member_counts_exact(client)
    listed = await (await client.get(ROOMS, headers=alice.headers)).json()
    assert [(r["kind"], r["member_count"]) for r in listed["items"]] == [("dm", 1)]


async def search_all(client: TestClient, account: Account, query: str, **params: Any) -> list[int]:
    """Every id a search finds, following its cursor page by page (newest first)."""
    found: list[int] = []
    cursor = None
    while True:
        args = {"q": query, "limit": 50, **params}
        if cursor is not None:
            args["cursor"] = cursor
        response = await client.get(f"{API}/search", params=args, headers=account.headers)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert len(page["items"]) <= 50
        found += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_search_pages_many_matches_newest_first_in_scope(client, alice, bob):
    mine = [await create_room(client, alice, name=f"mine {i}") for i in range(2)]
    theirs = await create_room(client, bob, name="theirs")
    rooms = [*mine, theirs]
    sent: list[tuple[int, int, str]] = []  # (id, room, body)
    for i in range(130):
        room = rooms[i % 3]
        author = bob if room is theirs else alice
        body = f"common word {i}" + (" rare" if i % 25 == 0 else "")
        message = await send(client, author, room, body)
        sent.append((message["id"], room["id"], body))
    # A body naming a room's id as a word: found by that word, never by the room.
    numbered = await send(client, alice, mine[0], f"see {mine[1]['id']}")
    deleted = sent[3][0]  # in mine[0]
    gone = await client.delete(f"{ROOMS}/{mine[0]['id']}/messages/{deleted}", headers=alice.headers)
    assert gone.status in (200, 204)

    def expected(word: str, room_ids: set[int]) -> list[int]:
        return sorted(
            (
                i
                for i, room, body in sent
                if room in room_ids and word in body.split() and i != deleted
            ),
            reverse=True,
        )

    my_ids = {room["id"] for room in mine}
    assert await search_all(client, alice, "common") == expected("common", my_ids)
    assert len(expected("common", my_ids)) > 80  # more than a page
    assert await search_all(client, alice, "rare") == expected("rare", my_ids)
    for room in mine:
        scoped = await search_all(client, alice, "common", room_id=room["id"])
        assert scoped == expected("common", {room["id"]})
    assert await search_all(client, alice, "common rare", room_id=mine[1]["id"]) == expected(
        "rare", {mine[1]["id"]}
    )
    assert await search_all(client, alice, str(mine[1]["id"])) == [numbered["id"]]
    assert await search_all(client, alice, str(mine[1]["id"]), room_id=mine[1]["id"]) == []
    # Another's room: nothing, whether asked for it or not.
    assert await search_all(client, alice, "common", room_id=theirs["id"]) == []
    assert await search_all(client, bob, "common") == expected("common", {theirs["id"]})


async def test_room_update_reaches_every_member_from_one_read(client, alice, monkeypatch):
    """`room.updated` is read once for all of this process's members' sockets (each
    still gets the room as they see it), never once per member."""
    room = await create_room(client, alice, name="before")
    others = [await signup(client, f"member{i}") for i in range(5)]
    for account in others:
        await join(client, account, room)
    sockets = {account.id: await connect(client, account) for account in [alice, *others]}
    for ws in sockets.values():  # a first frame ends the hold after `ready`
        await send_frame(ws, {"type": "ping"})
        await next_of(ws, "pong")
    queries = record_reads(client, monkeypatch)
    renamed = await client.patch(
        f"{ROOMS}/{room['id']}", json={"name": "after"}, headers=alice.headers
    )
    assert renamed.status == 200
    for user_id, ws in sockets.items():
        event = await next_of(ws, "room.updated")
        assert event["room"]["name"] == "after" and event["room"]["member_count"] == 6
        assert event["room"]["my_role"] == ("owner" if user_id == alice.id else "member")
        assert event["pos"] == (await renamed.json())["last_pos"]
    assert sum("viewer_id" in sql for sql in queries) == 1
    assert not [sql for sql in queries if "FROM room_events" in sql]  # no stream reads
    for ws in sockets.values():
        await ws.close()


async def test_resume_of_many_rooms_replays_exactly_the_missed_events_in_one_read(
    client, alice, bob, monkeypatch
):
    rooms = [await create_room(client, alice, name=f"r{i}") for i in range(12)]
    for room in rooms[::2]:
        await join(client, bob, room)
    ws = await connect(client, bob)
    seen = {r["room_id"]: r["last_pos"] for r in ws.ready["rooms"]}
    await ws.close()
    for index, room in enumerate(rooms):  # 0-3 events missed in bob's rooms
        for n in range(index % 4):
            await send(client, alice, room, f"{room['id']}:{n}")
    await client.patch(f"{ROOMS}/{rooms[2]['id']}", json={"topic": "new"}, headers=alice.headers)
    await join(client, await signup(client, "carol"), rooms[4])
    newest = {r["room_id"]: r["last_pos"] for r in (await connect(client, bob)).ready["rooms"]}
    queries = record_reads(client, monkeypatch)
    ws = await connect(client, bob, via_frame=True, rooms=seen)
    replayed: dict[int, list[tuple[int, str]]] = {}
    while (frame := await receive(ws))["type"] != "resumed":
        if "pos" in frame:
            replayed.setdefault(frame["room_id"], []).append((frame["pos"], frame["type"]))
    missed = {room_id: list(range(seen[room_id] + 1, newest[room_id] + 1)) for room_id in seen}
    assert {room_id: [pos for pos, _ in got] for room_id, got in replayed.items()} == {
        room_id: positions for room_id, positions in missed.items() if positions
    }
    assert ("member.joined" in {kind for _, kind in replayed[rooms[4]["id"]]}) is True
    assert replayed[rooms[2]["id"]][-1][1] == "room.updated"
    # One read of the stream for all the rooms, and one of their positions.
    assert sum("room_events" in sql for sql in queries) == 1
    assert sum("SELECT id, last_pos FROM rooms" in sql for sql in queries) == 1
    # The missed messages come with that read, not looked up again by id.
    assert not [sql for sql in queries if "FROM messages m WHERE m.id" in sql]
    await send(client, alice, rooms[0], "live")  # and live events go on from there
    live = await next_of(ws, "message.new")
    assert live["pos"] == newest[rooms[0]["id"]] + 1
    await ws.close()


@pytest.fixture
def fresh_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (the shared PostgreSQL one is migrated already)."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgraded.db'}"
        return
    with scratch_database() as url:
        yield url


async def test_upgrade_counts_members_and_keeps_old_messages_searchable(fresh_url, monkeypatch):
    """A database made before the scale migration gets exact member counts, and
    its messages stay searchable, in all rooms and in one."""
    every = migrations.load_migrations
    engine_name = "sqlite" if fresh_url.startswith("sqlite") else "postgres"
    newest = every(engine_name)[-1].version
    [scale] = [m.version for m in every(engine_name) if m.name == "scale"]
    monkeypatch.setattr(
        migrations, "load_migrations", lambda name: [m for m in every(name) if m.version < scale]
    )
    db = await Database.open(fresh_url)
    try:  # rows as the code before the migration wrote them
        for statement in [
            "INSERT INTO users (id, username, display_name, password_hash, created_at)"
            " VALUES (1, 'owner', 'Owner', '!', 0), (2, 'guest', 'Guest', '!', 0)",
            "INSERT INTO rooms (id, kind, name, created_at, last_seq, last_pos)"
            " VALUES (1, 'public', 'r1', 0, 1, 1), (2, 'public', 'r2', 0, 1, 1),"
            " (3, 'public', 'r3', 0, 0, 0)",
            "INSERT INTO members (room_id, user_id, role, joined_at)"
            " VALUES (1, 1, 'owner', 0), (1, 2, 'member', 0), (2, 1, 'owner', 0),"
            " (3, 1, 'owner', 0)",
            "INSERT INTO messages (id, room_id, seq, pos, sender_id, body, created_at)"
            " VALUES (1, 1, 1, 1, 2, 'an old needle', 0), (2, 2, 1, 1, 1, 'another needle', 0)",
        ]:
            await db.engine.write(statement)
    finally:
        await db.close()
    monkeypatch.setattr(migrations, "load_migrations", every)
    db = await Database.open(fresh_url)
    try:
        applied = await db.engine.fetchval("SELECT max(version) FROM schema_migrations")
        assert applied == newest
        rooms = await db.rooms_seen_by(1, [1, 2, 3])
        assert {room.id: room.member_count for room in rooms.values()} == {1: 2, 2: 1, 3: 1}
        everywhere = await db.search_messages(1, "needle", None, 2**62, 10)
        assert [m.body for m in everywhere] == ["another needle", "an old needle"]
        assert [m.id for m in await db.search_messages(2, "needle", 1, 2**62, 10)] == [1]
        assert await db.search_messages(2, "needle", 2, 2**62, 10) == []  # not in room 2
    finally:
        await db.close()
