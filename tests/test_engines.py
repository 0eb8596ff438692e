"""The engines under concurrent writes and reads: sends arriving together all
commit, in order and gap-free, a failing send fails only itself (SQLite runs
them in one transaction, each in a savepoint), a failed commit fails every
caller of its batch, and a slow read does not hold up the others."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable
from typing import Any

import pytest

from chat_server import keys
from chat_server.db import Database, NotMember, ReplyNotFound
from chat_server.engines import Conn, SqliteEngine

from .helpers import create_room, join

# Enough sends to need more than one SQLite batch (engines.GROUP_COMMIT_LIMIT).
SENDS_PER_ROOM = 150
# A guard against a hang, not a timing assertion.
HANG = 10.0


async def test_concurrent_sends_are_all_acked_stored_once_and_numbered_in_order(
    client, alice, bob, engine
):
    db: Database = client.app[keys.DB]
    rooms = [await create_room(client, alice, name=f"r{i}") for i in range(2)]
    for room in rooms:
        await join(client, bob, room)
    sends = [
        (room["id"], sender.id, f"{room['id']}:{n}")
        for n in range(SENDS_PER_ROOM)
        for room in rooms
        for sender in (alice, bob)
    ]
    results = await asyncio.gather(
        *(
            db.send_message(room_id, sender_id, body, body, None, ())
            for room_id, sender_id, body in sends
        )
    )
    assert all(result.created for result in results)
    for room in rooms:
        rows = await db.engine.fetch(
            "SELECT seq, pos, body FROM messages WHERE room_id = $1 ORDER BY seq", room["id"]
        )
        submitted = [body for room_id, _, body in sends if room_id == room["id"]]
        assert sorted(row["body"] for row in rows) == sorted(submitted)  # each stored once
        assert [row["seq"] for row in rows] == list(range(1, len(submitted) + 1))
        assert [row["pos"] for row in rows] == sorted(row["pos"] for row in rows)
        if engine == "sqlite":  # one writer, batches in submission order
            assert [row["body"] for row in rows] == submitted
        acked = {r.message.body: r.message.seq for r in results if r.message.room_id == room["id"]}
        assert acked == {row["body"]: row["seq"] for row in rows}


async def test_a_failing_send_fails_only_itself(client, alice, bob):
    db: Database = client.app[keys.DB]
    room = await create_room(client, alice)
    other = await create_room(client, bob, name="other")
    first = await db.send_message(room["id"], alice.id, "first", None, None, ())
    elsewhere = await db.send_message(other["id"], bob.id, "elsewhere", None, None, ())

    results = await asyncio.gather(
        db.send_message(room["id"], alice.id, "a", "same", None, ()),
        db.send_message(room["id"], alice.id, "bad reply", None, elsewhere.message.id, ()),
        db.send_message(room["id"], bob.id, "not a member", None, None, ()),
        db.send_message(room["id"], alice.id, "a again", "same", None, ()),
        db.send_message(room["id"], alice.id, "reply", None, first.message.id, ()),
        return_exceptions=True,
    )

    stored, bad_reply, not_member, retried, reply = results
    assert isinstance(bad_reply, ReplyNotFound)
    assert isinstance(not_member, NotMember)
    assert not isinstance(stored, BaseException) and stored.created
    assert not isinstance(retried, BaseException) and not retried.created
    assert retried.message.id == stored.message.id
    assert not isinstance(reply, BaseException) and reply.created
    assert sorted([stored.message.seq, reply.message.seq]) == [2, 3]  # nothing skipped
    rows = await db.engine.fetch(
        "SELECT seq, body, reply_count FROM messages WHERE room_id = $1", room["id"]
    )
    assert sorted((r["seq"], r["body"], r["reply_count"]) for r in rows) == sorted(
        [(1, "first", 1), (stored.message.seq, "a", 0), (reply.message.seq, "reply", 0)]
    )
    again = await db.engine.fetchval(
        "SELECT reply_count FROM messages WHERE id = $1", elsewhere.message.id
    )
    assert again == 0  # the failed reply's counter bump was rolled back with it


async def test_a_failed_commit_fails_every_caller_of_its_batch(tmp_path):
    engine = await SqliteEngine.connect(f"sqlite:///{tmp_path / 'batch.db'}")
    try:
        await engine.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await engine.execute(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )

        def commit(parent_id: int) -> Awaitable[int]:
            async def insert(tx: Conn) -> int:
                await tx.execute("INSERT INTO child (parent_id) VALUES ($1)", parent_id)
                return parent_id

            return engine.atomic(insert)

        await engine.execute("INSERT INTO parent (id) VALUES (1)")
        # The missing parent 2 is only found at COMMIT: the whole batch fails.
        results = await asyncio.gather(*(commit(p) for p in (1, 2, 1)), return_exceptions=True)
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        assert await engine.fetchval("SELECT count(*) FROM child") == 0
        # The writer is usable again, and a lone item commits.
        assert await commit(1) == 1
        assert await engine.fetchval("SELECT count(*) FROM child") == 1
    finally:
        await engine.close()


async def test_a_step_that_awaits_anything_else_fails_alone(tmp_path):
    engine = await SqliteEngine.connect(f"sqlite:///{tmp_path / 'step.db'}")
    try:
        await engine.execute("CREATE TABLE t (n INTEGER)")

        def commit(n: int) -> Awaitable[int]:
            async def insert(tx: Conn) -> int:
                await tx.execute("INSERT INTO t (n) VALUES ($1)", n)
                if n == 2:
                    await asyncio.sleep(0)  # not allowed inside a batch
                return n

            return engine.atomic(insert)

        results = await asyncio.gather(*(commit(n) for n in (1, 2, 3)), return_exceptions=True)
        assert results[0] == 1 and results[2] == 3
        assert isinstance(results[1], RuntimeError)
        rows = await engine.fetch("SELECT n FROM t ORDER BY n")
        assert [r["n"] for r in rows] == [1, 3]
    finally:
        await engine.close()


async def test_a_read_does_not_wait_for_an_open_write_transaction(client, alice):
    engine = client.app[keys.DB].engine
    before = await engine.fetchval("SELECT bio FROM users WHERE id = $1", alice.id)
    async with engine.transaction() as tx:
        await tx.execute("UPDATE users SET bio = 'changing' WHERE id = $1", alice.id)
        during = await asyncio.wait_for(
            engine.fetchval("SELECT bio FROM users WHERE id = $1", alice.id), HANG
        )
        assert during == before  # committed data only
    assert await engine.fetchval("SELECT bio FROM users WHERE id = $1", alice.id) == "changing"


@pytest.mark.parametrize("engine", ["sqlite"])  # PostgreSQL's pool is asyncpg's
async def test_a_read_does_not_wait_for_a_slow_read(client, alice, engine):
    sqlite = client.app[keys.DB].engine
    assert isinstance(sqlite, SqliteEngine)
    # A read that stays in the database until released: a SQL function that waits.
    gate = threading.Event()

    def install(conn: Any) -> None:
        conn.create_function("held", 0, lambda: gate.wait(HANG))

    for reader in sqlite._readers:
        await reader.call(install)
    slow = asyncio.create_task(sqlite.fetchval("SELECT held()"))
    try:
        username = await asyncio.wait_for(
            sqlite.fetchval("SELECT username FROM users WHERE id = $1", alice.id), HANG
        )
        assert username == "alice"
        assert not slow.done()
    finally:
        gate.set()
    assert await asyncio.wait_for(slow, HANG) == 1


@pytest.mark.parametrize("engine", ["sqlite"])
async def test_every_reader_sees_an_acked_send(client, alice, engine):
    db: Database = client.app[keys.DB]
    room = await create_room(client, alice)
    sent = await db.send_message(room["id"], alice.id, "seen", None, None, ())
    assert isinstance(db.engine, SqliteEngine)
    # As many reads at once as there are readers: each on its own connection.
    counts = await asyncio.gather(
        *(
            db.engine.fetchval("SELECT count(*) FROM messages WHERE id = $1", sent.message.id)
            for _ in db.engine._readers
        )
    )
    assert counts == [1] * len(db.engine._readers)
