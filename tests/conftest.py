"""Shared fixtures: one app factory, run on SQLite and on a real PostgreSQL.

PostgreSQL gets one fresh database per test run (dropped at the end) and is
emptied before each test. Without a reachable PostgreSQL the postgres cases
are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from chat_server import Config, create_app

from .helpers import IN_CI, Account, make_config, signup
from .helpers.postgres import PG_ADMIN_URL, admin, empty_tables, pg_url, run_sync
from .helpers.ws import FRAME_FAILURES, check_server_frame


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    name = f"chat_test_{secrets.token_hex(4)}"
    try:
        run_sync(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    try:
        yield pg_url(name)
    finally:
        run_sync(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    url = request.getfixturevalue("pg_database")
    run_sync(empty_tables(url))
    return url


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    return make_config(tmp_path, database_url)


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> TestClient:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def alice(client: TestClient) -> Account:
    return await signup(client, "alice", display_name="Alice")


@pytest.fixture
async def bob(client: TestClient) -> Account:
    return await signup(client, "bob", display_name="Bob")


# --- every WebSocket frame a test receives must match chat_server/asyncapi.json -------


@pytest.fixture(scope="session", autouse=True)
def received_frames_are_checked() -> Iterator[None]:
    """For the whole run, every client WebSocket checks the text frames it receives."""
    original = ClientWebSocketResponse.receive

    async def receive(self, timeout: float | None = None):
        msg = await original(self, timeout)
        if msg.type == WSMsgType.TEXT:
            check_server_frame(msg.data)
        return msg

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClientWebSocketResponse, "receive", receive)
        yield


@pytest.fixture(autouse=True)
def frames_match_asyncapi(
    received_frames_are_checked: None, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Fails a test during which a received frame did not match asyncapi.json
    (unless it is marked `raw_frames`: it sends frames of its own making)."""
    yield
    failures = FRAME_FAILURES[:]
    del FRAME_FAILURES[: len(failures)]
    if failures and request.node.get_closest_marker("raw_frames") is None:
        shown = "\n".join(failures)
        pytest.fail(f"received frames that do not match asyncapi.json:\n{shown}")
