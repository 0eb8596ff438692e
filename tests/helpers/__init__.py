"""What the tests share: accounts, configuration, and the REST calls many tests make.

The rest is in modules of its own: WebSocket clients and frame checks in `ws`,
uploads in `media`, HTTP over a bare socket in `rawhttp`, server and Redis
processes in `servers`, scratch PostgreSQL databases in `postgres`, and clients
of a two-node cluster in `cluster`. Fixtures live in the conftest.py files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from chat_server import Config

IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"
SHORT_HOLD = 0.2  # seconds a new test socket holds live messages for a `resume`
ROOMS = "/api/v1/rooms"


def make_config(tmp_path: Path, database_url: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "secret_key": "test-secret-key-" + "x" * 32,
        "bcrypt_rounds": 4,
        "auth_rate": None,
        "message_rate": None,
        # Tests sign up freely; the invite-only default has tests of its own.
        "registration": "open",
        # Listen-only test sockets would wait out the default 2 s hold for a
        # `resume`; tests of the hold itself ask for the default back.
        "ready_hold": SHORT_HOLD,
    }
    return Config(**(settings | overrides))


# --- accounts and errors ---------------------------------------------------------------


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


async def error_of(response: Any, status: int) -> dict[str, Any]:
    """Asserts the contract's error shape and status; returns the error object."""
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body["error"]


# --- rooms and messages ----------------------------------------------------------------


async def create_room(client, account, name="general", kind="public", **extra):
    response = await client.post(
        ROOMS, json={"name": name, "kind": kind, **extra}, headers=account.headers
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def join(client, account, room):
    response = await client.post(f"/api/v1/rooms/{room['id']}/join", headers=account.headers)
    assert response.status == 200


def messages_path(room):
    return f"/api/v1/rooms/{room['id']}/messages"


async def send(client, account, room, body="hello", **extra):
    response = await client.post(
        messages_path(room), json={"body": body, **extra}, headers=account.headers
    )
    assert response.status in (200, 201), await response.text()
    return await response.json()
