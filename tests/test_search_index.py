"""Search finds messages as they are now, whenever they were indexed: on SQLite
the full-text index is filled behind the sends (chat_server/search_index.py);
the same behaviour is asserted on PostgreSQL, whose index is in the row."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from chat_server import keys, search_index
from chat_server.db import Database

from .helpers import Account, create_room, messages_path, send

SEARCH = "/api/v1/search"


async def found(client: TestClient, account: Account, words: str, room_id: int | None = None):
    scope = "" if room_id is None else f"&room_id={room_id}"
    response = await client.get(f"{SEARCH}?q={words}{scope}", headers=account.headers)
    assert response.status == 200
    return [message["body"] for message in (await response.json())["items"]]


async def edit(client: TestClient, account: Account, message: dict, body: str) -> None:
    path = f"{messages_path({'id': message['room_id']})}/{message['id']}"
    response = await client.patch(path, json={"body": body}, headers=account.headers)
    assert response.status == 200, await response.text()


async def delete(client: TestClient, account: Account, message: dict) -> None:
    path = f"{messages_path({'id': message['room_id']})}/{message['id']}"
    response = await client.delete(path, headers=account.headers)
    assert response.status in (200, 204), await response.text()


async def assert_index_matches_messages(db: Database) -> None:
    """SQLite: the index holds exactly the messages up to its mark, each once and
    with the words of its body as it is now (read back through fts5vocab)."""
    if db.engine.name != "sqlite":
        return
    async with db.engine.transaction() as tx:
        await tx.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.indexed_words"
            " USING fts5vocab(main, messages_fts, instance)"
        )
        words = await tx.fetch("SELECT doc, term FROM temp.indexed_words WHERE col = 'body'")
        upto = await tx.fetchval("SELECT upto FROM fts_indexed")
        messages = await tx.fetch("SELECT id, body FROM messages WHERE id <= $1", upto)
    indexed: dict[int, list[str]] = {}
    for row in words:
        indexed.setdefault(row["doc"], []).append(row["term"])
    expected = {row["id"]: re.findall(r"\w+", row["body"].lower()) for row in messages}
    assert {doc: sorted(terms) for doc, terms in indexed.items()} == {
        id_: sorted(terms) for id_, terms in expected.items() if terms
    }


async def test_search_finds_messages_as_they_are_now_before_and_after_indexing(
    client, alice, engine
):
    db: Database = client.app[keys.DB]
    room = await create_room(client, alice)
    other = await create_room(client, alice, name="other")
    early = await send(client, alice, room, "early walrus")
    await send(client, alice, other, "other walrus")
    assert await found(client, alice, "walrus") == ["other walrus", "early walrus"]  # at once
    assert await found(client, alice, "walrus", room["id"]) == ["early walrus"]
    await assert_index_matches_messages(db)

    # Indexed by that search: edits and deletions keep the index in step.
    await edit(client, alice, early, "early narwhal")
    assert await found(client, alice, "walrus") == ["other walrus"]
    assert await found(client, alice, "narwhal", room["id"]) == ["early narwhal"]

    # Not indexed yet: changed before any search, found as they are now.
    late = await send(client, alice, room, "late walrus")
    gone = await send(client, alice, room, "gone walrus")
    await edit(client, alice, late, "late narwhal")
    await delete(client, alice, gone)
    assert await found(client, alice, "narwhal") == ["late narwhal", "early narwhal"]
    assert await found(client, alice, "walrus") == ["other walrus"]
    await delete(client, alice, early)
    assert await found(client, alice, "narwhal") == ["late narwhal"]
    await assert_index_matches_messages(db)


@pytest.mark.parametrize("engine", ["sqlite"])  # PostgreSQL indexes in the send's statement
async def test_sqlite_indexes_in_batches_behind_the_sends(client, alice, engine):
    db: Database = client.app[keys.DB]
    room = await create_room(client, alice)
    mark = "SELECT upto FROM fts_indexed"
    before = await db.engine.fetchval(mark)
    sends = search_index.BATCH - 1
    await asyncio.gather(*(send(client, alice, room, f"batch {n}") for n in range(sends)))
    assert await db.engine.fetchval(mark) == before  # the sends did not index

    last = await send(client, alice, room, "the one that fills the batch")
    assert db.search_index is not None
    await db.search_index.finish()  # the batch is indexed without a search asking
    assert await db.engine.fetchval(mark) == last["id"]
    await assert_index_matches_messages(db)


async def test_sqlite_messages_not_indexed_before_a_restart_are_found_after(
    tmp_path: Path,
):
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    db = await Database.open(url)
    try:
        user = await db.create_user("owner", "Owner", "!")
        room = await db.create_room("public", "r", "", user.id)
        for n in range(3):
            await db.send_message(room.id, user.id, f"before restart {n}", None, None, ())
        assert await db.engine.fetchval("SELECT upto FROM fts_indexed") == 0
    finally:
        await db.close()
    db = await Database.open(url)
    try:
        hits = await db.search_messages(user.id, "restart", None, 2**62, 10)
        assert [m.body for m in hits] == [f"before restart {n}" for n in (2, 1, 0)]
        await assert_index_matches_messages(db)
    finally:
        await db.close()
