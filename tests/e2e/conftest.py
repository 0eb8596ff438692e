"""Fixtures of the cluster tests: a database of the cluster's own, a client session,
and two server processes on a throwaway Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from playwright.sync_api import Browser

from ..helpers.browser import chromium
from ..helpers.cluster import Cluster, Node, start_nodes
from ..helpers.postgres import scratch_database
from ..helpers.servers import RedisProcess, ServerProcess


@pytest.fixture
def cluster_db(pg_database: str) -> Iterator[str]:
    """A fresh database of the cluster's own (its processes migrate it at start)."""
    with scratch_database() as url:
        yield url


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def cluster_env() -> dict[str, str]:
    """Extra environment of the cluster's nodes (a test module may override it)."""
    return {}


@pytest.fixture
async def cluster(tmp_path, cluster_db, session, cluster_env) -> AsyncIterator[Cluster]:
    redis = RedisProcess(tmp_path).start()
    servers: list[ServerProcess] = []
    cluster = None
    try:
        servers = start_nodes(tmp_path, cluster_db, redis.url, **cluster_env)
        cluster = Cluster(redis, servers, Node(session, servers[0]), Node(session, servers[1]))
        yield cluster
    finally:
        # Close the test's sockets first: a server's shutdown may otherwise wait long
        # for the close handshake of sockets nobody reads any more.
        if cluster is not None:
            for recorder in cluster.recorders:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(recorder.close(), 2)
        await session.close()
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in servers))
        if redis.process is not None:
            with contextlib.suppress(ProcessLookupError):
                redis.unpause()
        redis.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Debian chromium for a browser test module (tests/helpers/browser.py)."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A `python run.py` of the module's own, in a data folder of its own."""
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    process = ServerProcess({"CHAT_DATA_DIR": str(root / "data")}, root).start()
    try:
        yield process
    finally:
        process.stop()
