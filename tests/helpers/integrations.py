"""Personal tokens, bots and webhooks as tests make them, and sockets closed by the server."""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType

from . import Account

TOKENS = "/api/v1/auth/tokens"
BOTS = "/api/v1/bots"


async def make_token(client, account: Account, name: str = "ci", **extra: Any) -> dict[str, Any]:
    response = await client.post(TOKENS, json={"name": name, **extra}, headers=account.headers)
    assert response.status == 201, await response.text()
    return await response.json()


def as_token(user: dict[str, Any], token: str) -> Account:
    """An Account whose requests carry a personal access token."""
    return Account(user, token, "")


async def make_bot(client, owner: Account, username: str = "ci_bot") -> Account:
    response = await client.post(BOTS, json={"username": username}, headers=owner.headers)
    assert response.status == 201, await response.text()
    body = await response.json()
    return as_token(body["bot"], body["token"])


def webhooks_path(room: dict[str, Any]) -> str:
    return f"/api/v1/rooms/{room['id']}/webhooks"


async def make_webhook(client, account: Account, room, **body: Any) -> dict[str, Any]:
    response = await client.post(
        webhooks_path(room),
        json={"name": "CI", "kind": "incoming", **body},
        headers=account.headers,
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def closed(ws, timeout: float = 5.0) -> int:
    """The close code of a socket the server closes, skipping frames queued before it."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.CLOSE:
            return msg.data
        if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code
        assert msg.type == WSMsgType.TEXT, msg
