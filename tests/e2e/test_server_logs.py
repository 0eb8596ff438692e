"""The security table's "secrets in logs" row for a real `python run.py`: whatever
a client does, the server's own log files hold no password, token or message body."""

from __future__ import annotations

import secrets

import aiohttp
import pytest

from ..helpers.servers import ServerProcess
from ..helpers.ws import next_of


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_server_logs_hold_no_token_password_or_message_body(tmp_path, level):
    password = "pw-" + secrets.token_hex(8)
    body = "body-" + secrets.token_hex(8)
    server = ServerProcess(
        {
            "CHAT_DATA_DIR": str(tmp_path / "data"),
            "CHAT_LOG_FORMAT": "json",
            "CHAT_LOG_LEVEL": level,
        },
        tmp_path,
    ).start()
    secrets_used: list[str] = [password, body]
    try:
        async with aiohttp.ClientSession() as session:
            url = server.url + "/api/v1"
            async with session.post(
                url + "/auth/signup", json={"username": "logged", "password": password}
            ) as response:
                tokens = await response.json()
            access, refresh = tokens["access_token"], tokens["refresh_token"]
            secrets_used += [access, refresh]
            auth = {"Authorization": f"Bearer {access}"}
            async with session.post(
                url + "/auth/login", json={"username": "logged", "password": password + "x"}
            ) as response:
                assert response.status == 401
            async with session.post(
                url + "/rooms", json={"name": "r", "kind": "public"}, headers=auth
            ) as response:
                room = await response.json()
            async with session.post(
                url + f"/rooms/{room['id']}/messages", json={"body": body}, headers=auth
            ) as response:
                assert response.status == 201
            async with session.get(url + "/users/me", params={"token": access}, headers=auth):
                pass
            ws = await session.ws_connect(url + "/ws")
            await ws.send_json({"type": "auth", "token": access})
            await next_of(ws, "ready")
            await ws.send_json({"type": "send", "room_id": room["id"], "body": body + "-ws"})
            await next_of(ws, "ack")
            await ws.close()
            ws = await session.ws_connect(url + "/ws")
            await ws.send_json({"type": "auth", "token": access + "tampered"})
            await ws.receive(timeout=5)
            await ws.close()
            async with session.post(url + "/auth/refresh", json={"refresh_token": refresh}) as r:
                secrets_used.append((await r.json())["access_token"])
            async with session.post(
                url + "/auth/password",
                json={"old_password": password, "new_password": password + "2"},
                headers={"Authorization": f"Bearer {secrets_used[-1]}"},
            ) as response:
                assert response.status == 204
            async with session.post(url + "/auth/refresh", json={"refresh_token": refresh}) as r:
                assert r.status == 401  # reuse of a rotated refresh token
    finally:
        server.stop()
    logs = server.logs()
    assert '"request_id"' in logs  # the JSON access log did run
    leaks = [
        line[:300]
        for line in logs.splitlines()
        if "eyJ" in line or any(x in line for x in secrets_used)
    ]
    assert not leaks, f"{len(leaks)} log lines hold a secret, e.g.:\n" + "\n".join(leaks[:3])
