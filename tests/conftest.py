"""Shared fixtures: one app factory, run on SQLite and on a real PostgreSQL.

PostgreSQL gets one fresh database per test run (dropped at the end) and is
emptied before each test. Without a reachable PostgreSQL the postgres cases
are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from chat_server import Config, create_app

# Autouse: every WebSocket frame a test receives must match chat_server/asyncapi.json.
from .wsutil import frames_match_asyncapi, received_frames_are_checked  # noqa: F401

PG_ADMIN_URL = os.environ.get("CHAT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"
SHORT_HOLD = 0.2  # seconds a new test socket holds live messages for a `resume`
TABLES = "users, sessions, media, rooms, members, messages, message_attachments"


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def _run(coroutine: Any) -> Any:
    """Runs a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    name = f"chat_test_{secrets.token_hex(4)}"
    try:
        _run(_admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    try:
        yield _pg_url(name)
    finally:
        _run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of its own, for server processes to migrate; dropped after."""
    name = f"chat_scratch_{secrets.token_hex(4)}"
    _run(_admin(f"CREATE DATABASE {name}"))
    try:
        yield _pg_url(name)
    finally:
        _run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@contextlib.contextmanager
def engine_env(
    engine: str, request: pytest.FixtureRequest, data_dir: Path
) -> Iterator[dict[str, str]]:
    """Environment for `python run.py` on `engine`: SQLite in `data_dir`, or a scratch
    PostgreSQL database (skipped without PostgreSQL, a failure under CI=true)."""
    env = {"CHAT_DATA_DIR": str(data_dir)}
    if engine == "sqlite":
        yield env
        return
    request.getfixturevalue("pg_database")
    with scratch_database() as url:
        yield env | {"CHAT_DATABASE_URL": url}


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


async def _empty_tables(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('users') IS NOT NULL"):
            await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def database_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    url = request.getfixturevalue("pg_database")
    _run(_empty_tables(url))
    return url


def make_config(tmp_path: Path, database_url: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "secret_key": "test-secret-key-" + "x" * 32,
        "bcrypt_rounds": 4,
        "auth_rate": None,
        "message_rate": None,
        # Listen-only test sockets would wait out the default 2 s hold for a
        # `resume`; tests of the hold itself ask for the default back.
        "ready_hold": SHORT_HOLD,
    }
    return Config(**(settings | overrides))


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    return make_config(tmp_path, database_url)


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> TestClient:
    return await aiohttp_client(create_app(config))


@dataclass
class Account:
    user: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def id(self) -> int:
        return self.user["id"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def signup(client: TestClient, username: str, **extra: Any) -> Account:
    response = await client.post(
        "/api/v1/auth/signup", json={"username": username, "password": PASSWORD, **extra}
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    return Account(body["user"], body["access_token"], body["refresh_token"])


@pytest.fixture
async def alice(client: TestClient) -> Account:
    return await signup(client, "alice", display_name="Alice")


@pytest.fixture
async def bob(client: TestClient) -> Account:
    return await signup(client, "bob", display_name="Bob")


async def error_of(response: Any, status: int) -> dict[str, Any]:
    """Asserts the contract's error shape and status; returns the error object."""
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body["error"]
