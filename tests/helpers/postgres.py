"""Scratch PostgreSQL databases: created through the admin URL, dropped after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

PG_ADMIN_URL = os.environ.get("CHAT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = "users, sessions, media, rooms, members, messages, message_attachments"


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def run_sync(coroutine: Any) -> Any:
    """Runs a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of its own, for server processes to migrate; dropped after."""
    name = f"chat_scratch_{secrets.token_hex(4)}"
    run_sync(admin(f"CREATE DATABASE {name}"))
    try:
        yield pg_url(name)
    finally:
        run_sync(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def empty_tables(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('users') IS NOT NULL"):
            await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
            # The first admin's setup token belongs to the emptied users' installation.
            await conn.execute("UPDATE installation SET setup_token_sha256 = NULL")
    finally:
        await conn.close()
