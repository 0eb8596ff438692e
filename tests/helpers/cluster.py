"""Clients of server processes that form one cluster (one PostgreSQL, one Redis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from . import PASSWORD, Account
from .servers import RedisProcess, ServerProcess
from .ws import Recorder, next_of, page_events


def start_nodes(tmp_path: Path, db_url: str, redis_url: str, count: int = 2, **env: str):
    nodes = []
    for i in range(count):
        data_dir = tmp_path / f"node{i}"
        data_dir.mkdir()
        settings = {
            "CHAT_DATA_DIR": str(data_dir),
            "CHAT_DATABASE_URL": db_url,
            "CHAT_REDIS_URL": redis_url,
            **env,
        }
        nodes.append(ServerProcess(settings, tmp_path).start())
    return nodes


class Node:
    """A client of one node: REST calls and WebSockets with an account's token."""

    def __init__(self, session: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.session = session
        self.base = server.url

    async def call(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body

    async def signup(self, username: str) -> dict:
        status, body = await self.call(
            "POST", "/api/v1/auth/signup", json={"username": username, "password": PASSWORD}
        )
        assert status == 201, body
        return body

    async def ws(self, token: str):
        ws = await self.session.ws_connect(
            self.base + "/api/v1/ws", headers={"Authorization": f"Bearer {token}"}
        )
        ws.ready = await next_of(ws, "ready")
        return ws


@dataclass
class Cluster:
    redis: RedisProcess
    servers: list[ServerProcess]
    one: Node
    two: Node
    recorders: list[Recorder] = field(default_factory=list)

    async def signup(self, node: Node, name: str) -> Account:
        body = await node.signup(name)
        return Account(body["user"], body["access_token"], body["refresh_token"])

    async def room(self, owner: Account, kind: str = "public", name: str = "stream") -> int:
        status, room = await self.one.call(
            "POST", "/api/v1/rooms", owner.access_token, json={"name": name, "kind": kind}
        )
        assert status == 201, room
        return room["id"]

    async def join(self, node: Node, account: Account, room_id: int) -> None:
        status, body = await node.call(
            "POST", f"/api/v1/rooms/{room_id}/join", account.access_token
        )
        assert status == 200, body

    async def listen(self, node: Node, account: Account, label: str) -> Recorder:
        """A recorded connection on `node` whose hold is over."""
        ws = await node.ws(account.access_token)
        recorder = Recorder(ws, account.id, label=label)
        self.recorders.append(recorder)
        return await recorder.live()

    async def events(self, account: Account, room_id: int) -> list[dict]:
        async def fetch(path: str) -> dict:
            status, body = await self.one.call("GET", path, account.access_token)
            assert status == 200, body
            return body

        return await page_events(fetch, room_id)

    async def last_pos(self, account: Account, room_id: int) -> int:
        status, room = await self.one.call("GET", f"/api/v1/rooms/{room_id}", account.access_token)
        assert status == 200, room
        return room["last_pos"]
