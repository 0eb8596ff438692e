"""The README's "Embed it" example, run as written against real clients."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import aiohttp

from ..helpers import PASSWORD
from ..helpers.servers import REPO, free_port, wait_http
from ..helpers.ws import next_of


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Embed it in your aiohttp app", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "no python block in the README's Embed section"
    return found.group(1)


async def test_the_readme_embedding_example_greets(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CHAT_DATA_DIR": str(tmp_path / "data"),
        "CHAT_PORT": str(port),
        "CHAT_REGISTRATION": "open",
        "CHAT_BCRYPT_ROUNDS": "4",
    }
    log = (tmp_path / "example.log").open("wb")
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/chat"
    try:
        await asyncio.to_thread(wait_http, f"{base}/healthz")
        async with aiohttp.ClientSession() as session:
            await _greets(session, base)
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)
    output = (tmp_path / "example.log").read_text(errors="replace")
    assert "Traceback" not in output, output


async def _greets(session: aiohttp.ClientSession, base: str) -> None:
    api = f"{base}/api/v1"
    async with session.post(
        f"{api}/auth/signup", json={"username": "alice", "password": PASSWORD}
    ) as response:
        assert response.status == 201, await response.text()
        auth = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
    rooms = {}
    for name, kind in (("lobby", "public"), ("secret", "private")):
        async with session.post(
            f"{api}/rooms", json={"name": name, "kind": kind}, headers=auth
        ) as response:
            rooms[kind] = await response.json()
    ws = await session.ws_connect(f"{api}/ws", headers=auth)
    await next_of(ws, "ready")
    # In a private room it is not in, the bot cannot answer: it logs and carries on.
    for kind in ("private", "public"):
        async with session.post(
            f"{api}/rooms/{rooms[kind]['id']}/messages", json={"body": "!hello"}, headers=auth
        ) as response:
            assert response.status == 201
    asked = None
    while True:
        event = await next_of(ws, "message.new", timeout=15)
        message = event["message"]
        if message["body"] == "!hello" and message["room_id"] == rooms["public"]["id"]:
            asked = message
        if message["body"] == "Hello!":
            break
    assert asked is not None
    assert message["room_id"] == rooms["public"]["id"] and message["reply_to"] == asked["id"]
    async with session.get(f"{api}/users/{message['sender_id']}", headers=auth) as response:
        bot = await response.json()
    assert bot["username"] == "hello_bot" and bot["is_bot"] is True
    async with session.get(f"{api}/rooms/{rooms['private']['id']}/messages", headers=auth) as r:
        assert [m["body"] for m in (await r.json())["items"]] == ["!hello"]
    # Under a prefix the web client is not served (it needs the site root): said with a 404.
    async with session.get(f"{base}/") as response:
        assert response.status == 404
    await ws.close()
