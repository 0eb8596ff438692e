"""A full disk under the database: 503 `unavailable` with Retry-After, `/readyz`
says so, and writes work again once there is space, without a restart.

The disk is filled for real on each engine: SQLite gets `PRAGMA max_page_count`
lowered to the file's current size on the server's own writer connection (its
writes then fail with SQLITE_FULL, as on a full disk); PostgreSQL gets triggers
that raise SQLSTATE 53100 (`disk_full`), what the server reports when it cannot
extend a file.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from chat_server import keys

from .helpers import PASSWORD, create_room, error_of, messages_path, send, signup
from .helpers.ws import connect, next_of

BIG = "x" * 4000
# More attempts than it takes to use up the last free space in the pages.
ATTEMPTS = 300
SQLITE_DEFAULT_MAX_PAGES = 1073741823
FULL_TABLES = ("users", "sessions", "messages")


@asynccontextmanager
async def full_disk(client: Any, database_url: str) -> AsyncIterator[Any]:
    """While inside: the database cannot grow. Yields a function that frees space."""
    engine = client.app[keys.DB].engine
    if engine.name == "sqlite":
        await engine.write("PRAGMA max_page_count = 1")  # clamped to the current size

        async def free() -> None:
            await engine.write(f"PRAGMA max_page_count = {SQLITE_DEFAULT_MAX_PAGES}")

        yield free
        await free()
        return
    conn = await asyncpg.connect(database_url)

    async def free_pg() -> None:
        for table in FULL_TABLES:
            await conn.execute(f"DROP TRIGGER IF EXISTS disk_full ON {table}")

    try:
        await conn.execute(
            "CREATE OR REPLACE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'"
            " USING ERRCODE = 'disk_full'; END $$"
        )
        for table in FULL_TABLES:
            await conn.execute(
                f"CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION disk_full()"
            )
        yield free_pg
    finally:
        await free_pg()
        await conn.execute("DROP FUNCTION IF EXISTS disk_full()")
        await conn.close()


async def until_refused(attempt: Any) -> Any:
    """The first response of `attempt()` that is not a success (the space runs out)."""
    for _ in range(ATTEMPTS):
        response = await attempt()
        if response.status >= 300:
            return response
    raise AssertionError(f"still accepted after {ATTEMPTS} writes")


async def assert_unavailable(response: Any) -> None:
    error = await error_of(response, 503)
    assert error["code"] == "unavailable", error
    assert int(response.headers["Retry-After"]) >= 1


async def test_a_full_disk_is_503_then_recovers(client, alice, database_url, caplog):
    caplog.set_level(logging.INFO)
    room = await create_room(client, alice)
    drafts = [await send(client, alice, room, f"draft {i}") for i in range(ATTEMPTS // 10)]
    ws = await connect(client, alice)
    async with full_disk(client, database_url) as free:
        # sends
        sent = await until_refused(
            lambda: client.post(messages_path(room), json={"body": BIG}, headers=alice.headers)
        )
        await assert_unavailable(sent)
        # readiness says why while writes fail for lack of space
        ready = await client.get("/readyz")
        error = await error_of(ready, 503)
        assert error["code"] == "unavailable" and "full" in error["message"], error
        # the same send over the WebSocket is an `error` frame, and the socket stays
        await ws.send_json({"type": "send", "room_id": room["id"], "body": BIG, "ref": "f"})
        frame = await next_of(ws, "error")
        assert frame["code"] == "unavailable" and frame["ref"] == "f", frame
        # edits
        edits = iter(drafts * 10)

        def edit() -> Any:
            message = next(edits)
            path = f"{messages_path(room)}/{message['id']}"
            return client.patch(path, json={"body": BIG}, headers=alice.headers)

        await assert_unavailable(await until_refused(edit))
        # signups
        names = iter(range(ATTEMPTS))

        def sign_up() -> Any:
            body = {"username": f"user{next(names)}", "password": PASSWORD}
            return client.post("/api/v1/auth/signup", json=body)

        await assert_unavailable(await until_refused(sign_up))
        # space comes back: everything works again, without a restart
        await free()
        assert (await send(client, alice, room, BIG))["body"] == BIG
        assert (await client.get("/readyz")).status == 200
        await ws.send_json({"type": "send", "room_id": room["id"], "body": "back", "ref": "b"})
        assert (await next_of(ws, "ack"))["ref"] == "b"
        await signup(client, "after")
    await ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text
