"""Sessions and tokens under races, a second database, and skewed clocks, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType

from chat_server import create_app

from .helpers import PASSWORD, Account, error_of, make_config, signup
from .helpers.postgres import scratch_database

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
PASSWORD_PATH = "/api/v1/auth/password"
SESSIONS = "/api/v1/auth/sessions"
ME = "/api/v1/users/me"
SECRET = "test-secret-key-" + "x" * 32
# Rounds of the race below, and clients logging in without pause during each
# change: without the check in the session insert, every round here kept
# sessions made with the old password (and PostgreSQL did without its row lock).
RACE_ROUNDS = 8
RACING_CLIENTS = 4


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _login(client: Any, password: str) -> str | None:
    """The new session's access token, or None when the login was refused."""
    response = await client.post(LOGIN, json={"username": "alice", "password": password})
    if response.status == 401:
        return None
    assert response.status == 200, await response.text()
    return (await response.json())["access_token"]


async def _log_in_until_done(client: Any, password: str, task: asyncio.Task) -> list[str]:
    """Logs in again and again while `task` runs; the access tokens it got."""
    tokens = []
    while not task.done():
        token = await _login(client, password)
        tokens += [token] if token is not None else []
    return tokens


async def _refresh(client: Any, refresh_token: str) -> str | None:
    response = await client.post(REFRESH, json={"refresh_token": refresh_token})
    if response.status == 401:
        return None
    assert response.status == 200, await response.text()
    return (await response.json())["access_token"]


async def test_sessions_racing_a_password_change_all_end(client, alice):
    """A password change leaves only its own session, however logins and a
    refresh interleave with it (DESIGN.md invariant 9)."""
    old = PASSWORD
    for round_ in range(RACE_ROUNDS):
        new = f"new password {round_}"
        other = await client.post(LOGIN, json={"username": "alice", "password": old})
        other_refresh = (await other.json())["refresh_token"]
        change = asyncio.create_task(
            client.post(
                PASSWORD_PATH,
                json={"old_password": old, "new_password": new},
                headers=alice.headers,
            )
        )
        racers = [
            asyncio.create_task(_log_in_until_done(client, old, change))
            for _ in range(RACING_CLIENTS)
        ]
        refreshed = await _refresh(client, other_refresh)
        assert (await change).status == 204
        tokens = [token for tokens in await asyncio.gather(*racers) for token in tokens]
        for token in [t for t in [*tokens, refreshed] if t is not None]:
            await error_of(await client.get(ME, headers=_bearer(token)), 401)
        listed = await (await client.get(SESSIONS, headers=alice.headers)).json()
        assert [s["current"] for s in listed["items"]] == [True], f"round {round_}"
        old = new


async def test_concurrent_password_changes_keep_one_password(client, alice):
    """Two changes from two sessions verified against the same old password:
    one wins, the other is refused, and only the winner's session lives."""
    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    body = await response.json()
    second = Account(body["user"], body["access_token"], body["refresh_token"])
    first_change, second_change = await asyncio.gather(
        client.post(
            PASSWORD_PATH,
            json={"old_password": PASSWORD, "new_password": "first new password"},
            headers=alice.headers,
        ),
        client.post(
            PASSWORD_PATH,
            json={"old_password": PASSWORD, "new_password": "second new password"},
            headers=second.headers,
        ),
    )
    statuses = sorted([first_change.status, second_change.status])
    assert statuses == [204, 401]
    winner, password = (
        (alice, "first new password")
        if first_change.status == 204
        else (second, "second new password")
    )
    loser = second if winner is alice else alice
    assert (await client.get(ME, headers=winner.headers)).status == 200
    await error_of(await client.get(ME, headers=loser.headers), 401)
    assert await _login(client, password) is not None


@contextlib.contextmanager
def _other_database(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second, empty database of the same engine."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    request.getfixturevalue("pg_database")
    with scratch_database() as url:
        yield url


async def test_tokens_are_refused_by_another_database(
    aiohttp_client, tmp_path, database_url, engine, request
):
    """Same secret key, another database: the ids in a token name other rows there."""
    first = await aiohttp_client(create_app(make_config(tmp_path, database_url)))
    alice = await signup(first, "alice")
    with _other_database(engine, tmp_path, request) as other_url:
        config = make_config(tmp_path, other_url, data_dir=tmp_path / "other")
        second = await aiohttp_client(create_app(config))
        bob = await signup(second, "bob")  # the same user and session ids as alice's
        assert (bob.id, _claims(bob.access_token)["sid"]) == (
            alice.id,
            _claims(alice.access_token)["sid"],
        )
        refused = await error_of(await second.get(ME, headers=alice.headers), 401)
        assert refused["code"] == "unauthorized"
        refresh = await second.post(REFRESH, json={"refresh_token": alice.refresh_token})
        assert (await error_of(refresh, 401))["code"] == "unauthorized"
        await error_of(await first.get(ME, headers=bob.headers), 401)
        assert (await second.get(ME, headers=bob.headers)).status == 200
        await second.close()
    assert (await first.get(ME, headers=alice.headers)).status == 200
    unbound = {k: v for k, v in _claims(alice.access_token).items() if k != "iss"}
    no_issuer = jwt.encode(unbound, SECRET, algorithm="HS256")
    await error_of(await first.get(ME, headers=_bearer(no_issuer)), 401)


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _shifted(token: str, seconds: int, **overrides: Any) -> str:
    """The token as a node whose clock is `seconds` ahead would have issued it."""
    claims = _claims(token)
    claims["iat"] += seconds
    claims["exp"] += seconds
    return jwt.encode(claims | overrides, SECRET, algorithm="HS256")


async def test_tokens_from_a_node_slightly_ahead_are_accepted(client, alice):
    ahead = _shifted(alice.access_token, 5)
    assert (await client.get(ME, headers=_bearer(ahead))).status == 200
    not_before = _shifted(alice.access_token, 0, nbf=int(time.time()) + 5)
    assert (await client.get(ME, headers=_bearer(not_before))).status == 200
    refreshed = await client.post(REFRESH, json={"refresh_token": _shifted(alice.refresh_token, 5)})
    assert refreshed.status == 200


async def test_clock_leeway_is_bounded_and_does_not_extend_expiry(client, alice):
    far_ahead = _shifted(alice.access_token, 120)
    await error_of(await client.get(ME, headers=_bearer(far_ahead)), 401)
    now = int(time.time())
    just_expired = _shifted(alice.access_token, 0, exp=now - 2)
    await error_of(await client.get(ME, headers=_bearer(just_expired)), 401)
    refresh_expired = _shifted(alice.refresh_token, 0, exp=now - 2)
    await error_of(await client.post(REFRESH, json={"refresh_token": refresh_expired}), 401)


async def test_a_socket_whose_session_ends_while_it_connects_is_closed(client, alice, monkeypatch):
    """A logout committed after the socket's token was checked, but before the
    socket was indexed where revocations look (so its close found nothing),
    still ends the socket: the credential is read again once it is indexed."""
    from chat_server import keys
    from chat_server.realtime import ws as ws_module

    checked = ws_module.authenticate_token

    async def check_then_logout_elsewhere(app, token):
        principal = await checked(app, token)
        await app[keys.DB].revoke_session(principal.user_id, principal.session_id)
        app[keys.HUB].close_sessions([principal.session_id])  # finds no socket yet
        return principal

    monkeypatch.setattr(ws_module, "authenticate_token", check_then_logout_elsewhere)
    ws = await client.ws_connect("/api/v1/ws", headers=alice.headers)
    message = await ws.receive(timeout=10)  # the close, never `ready`
    assert (message.type, ws.close_code) == (WSMsgType.CLOSE, 1008), message
