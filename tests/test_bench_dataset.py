"""The benchmark's data generator (bench/dataset.py) against the real server.

A tiny dataset, seeded straight into each engine's schema, must read back
through the running server exactly as a database the server wrote itself
would: history, search, the room list with its unread counts, a resume, and a
new send continuing the room's seq and pos. This keeps the generator honest
as the schema changes.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bench.dataset import BIG_ROOM, COMMON_WORD, RARE_WORD, Shape, seed
from bench.scale import Api, check_seeded

from .helpers.servers import ServerProcess, engine_env

TINY = Shape(
    messages=400,
    users=60,
    rooms=20,
    big_room_members=30,
    probes=4,
    probe_rooms=8,
    room_members=(5, 10),
)


async def test_a_seeded_database_reads_back_through_the_server(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with engine_env(engine, request, tmp_path / "data") as env:
        url = env.get("CHAT_DATABASE_URL") or f"sqlite:///{tmp_path / 'data' / 'chat.db'}"
        seeded = await seed(url, TINY)
        assert sum(seeded.last_seq.values()) == TINY.messages
        assert seeded.rare_rooms and seeded.common_hits
        server = ServerProcess(env | {"CHAT_DATABASE_URL": url}, tmp_path).start()
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(server.url, session)
                await api.login([1, 2])
                big_last = seeded.last_seq[BIG_ROOM]
                page = await api.call("GET", f"/rooms/{BIG_ROOM}/messages?limit=10", 2)
                assert [m["seq"] for m in page["items"]] == list(range(big_last - 9, big_last + 1))
                assert page["items"][-1]["body"] == seeded.last_body[BIG_ROOM]

                found = (await api.call("GET", f"/search?q={COMMON_WORD}&limit=100", 1))["items"]
                assert found and all(COMMON_WORD in m["body"] for m in found)
                assert [m["id"] for m in found] == sorted((m["id"] for m in found), reverse=True)

                rooms = (await api.call("GET", "/rooms", 1))["items"]
                assert sorted(r["id"] for r in rooms) == list(range(1, TINY.probe_rooms + 1))
                assert {r["id"]: r["unread_count"] for r in rooms} == {
                    r: min(5, seeded.last_seq.get(r, 0)) for r in range(1, TINY.probe_rooms + 1)
                }

                # the bench's own check: history, rare-word search, room list,
                # a send continuing seq and pos, a resume replaying 5 per room
                assert await check_seeded(api, seeded, server.port) == []
                rare = (await api.call("GET", f"/search?q={RARE_WORD}", 2))["items"]
                assert len(rare) == sum(1 for r in seeded.rare_rooms if r in range(1, 9))
        finally:
            server.stop()
