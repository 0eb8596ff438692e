"""Personal access tokens: made, listed, used over REST and WebSocket, revoked at once."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from aiohttp import WSCloseCode, WSServerHandshakeError

from chat_server import keys
from chat_server.models import now_ms
from chat_server.tokens import MAX_TOKENS_PER_USER

from .helpers import PASSWORD, error_of, signup
from .helpers.integrations import TOKENS, as_token, closed, make_token
from .helpers.ws import WS, connect, next_of

ME = "/api/v1/users/me"


async def _row(client, token_id: int):
    return await client.app[keys.DB].engine.fetchrow(
        "SELECT token_sha256, last_used_at, revoked_at FROM access_tokens WHERE id = $1", token_id
    )


async def test_create_list_use_and_revoke(client, alice):
    made = await make_token(client, alice, "deploy script")
    assert set(made) == {"id", "name", "token", "created_at", "expires_at", "last_used_at"}
    assert made["name"] == "deploy script" and made["expires_at"] is None
    token = made["token"]
    assert token.startswith("chat_pat_") and len(token) == len("chat_pat_") + 43  # 256 bits
    row = await _row(client, made["id"])
    assert row["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()  # only the hash

    me = await client.get(ME, headers=as_token(alice.user, token).headers)
    assert me.status == 200 and (await me.json())["id"] == alice.id

    listed = await (await client.get(TOKENS, headers=alice.headers)).json()
    assert [t["id"] for t in listed["items"]] == [made["id"]]
    assert "token" not in listed["items"][0] and listed["items"][0]["last_used_at"] is not None

    assert (await client.delete(f"{TOKENS}/{made['id']}", headers=alice.headers)).status == 204
    await error_of(await client.get(ME, headers=as_token(alice.user, token).headers), 401)
    assert (await (await client.get(TOKENS, headers=alice.headers)).json())["items"] == []
    await error_of(await client.delete(f"{TOKENS}/{made['id']}", headers=alice.headers), 404)


async def test_someone_elses_token_cannot_be_revoked(client, alice, bob):
    made = await make_token(client, alice)
    await error_of(await client.delete(f"{TOKENS}/{made['id']}", headers=bob.headers), 404)
    assert (await client.get(ME, headers=as_token(alice.user, made["token"]).headers)).status == 200


async def test_bad_fields_are_named(client, alice):
    response = await client.post(TOKENS, json={"expires_in": 5}, headers=alice.headers)
    fields = (await error_of(response, 400))["details"]["fields"]
    assert set(fields) == {"name", "expires_in"}
    unknown = as_token(alice.user, "chat_pat_" + "A" * 43)
    await error_of(await client.get(ME, headers=unknown.headers), 401)


async def test_a_token_is_not_a_session(client, alice):
    """It survives logout and password changes, and cannot manage sessions or tokens."""
    token = as_token(alice.user, (await make_token(client, alice))["token"])
    for method, path, body in (
        ("POST", "/api/v1/auth/logout", None),
        ("GET", "/api/v1/auth/sessions", None),
        ("POST", TOKENS, {"name": "more"}),
        ("GET", TOKENS, None),
        ("POST", "/api/v1/auth/password", {"old_password": PASSWORD, "new_password": "x" * 12}),
    ):
        response = await client.request(method, path, json=body, headers=token.headers)
        await error_of(response, 403)
    password = {"old_password": PASSWORD, "new_password": "another password"}
    changed = await client.post("/api/v1/auth/password", json=password, headers=alice.headers)
    assert changed.status == 204
    assert (await client.post("/api/v1/auth/logout", headers=alice.headers)).status == 204
    assert (await client.get(ME, headers=token.headers)).status == 200


async def test_last_used_at_is_written_at_most_once_a_minute(client, alice):
    made = await make_token(client, alice)
    token = as_token(alice.user, made["token"])
    await client.get(ME, headers=token.headers)
    first = (await _row(client, made["id"]))["last_used_at"]
    await client.get(ME, headers=token.headers)
    assert (await _row(client, made["id"]))["last_used_at"] == first
    db = client.app[keys.DB]
    await db.engine.execute(
        "UPDATE access_tokens SET last_used_at = $2 WHERE id = $1", made["id"], first - 61_000
    )
    await client.get(ME, headers=token.headers)
    assert (await _row(client, made["id"]))["last_used_at"] >= first


@pytest.mark.parametrize("via_frame", [False, True])
async def test_revoking_closes_open_sockets_at_once(client, alice, via_frame):
    made = await make_token(client, alice)
    token = as_token(alice.user, made["token"])
    ws = await connect(client, token, via_frame=via_frame)
    assert ws.ready["user"]["id"] == alice.id
    await client.delete(f"{TOKENS}/{made['id']}", headers=alice.headers)
    assert await closed(ws) == WSCloseCode.POLICY_VIOLATION
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect(WS, headers=token.headers)
    assert refused.value.status == 401


async def test_an_expired_token_is_refused_and_its_socket_closed(client, alice):
    made = await make_token(client, alice, expires_in=3600)
    token = as_token(alice.user, made["token"])
    # The token ends in a moment (set on its row, as a short lifetime would be).
    await client.app[keys.DB].engine.execute(
        "UPDATE access_tokens SET expires_at = $2 WHERE id = $1", made["id"], now_ms() + 700
    )
    ws = await connect(client, token)
    assert (await client.get(ME, headers=token.headers)).status == 200
    assert await closed(ws) == WSCloseCode.POLICY_VIOLATION
    await error_of(await client.get(ME, headers=token.headers), 401)


async def test_tokens_die_with_their_owners_deactivation(client, alice):
    bob = await signup(client, "bob")
    await client.app[keys.DB].engine.execute(
        "UPDATE users SET is_admin = TRUE WHERE id = $1", alice.id
    )
    made = await make_token(client, bob)
    token = as_token(bob.user, made["token"])
    ws = await connect(client, token)
    patched = await client.patch(
        f"/api/v1/admin/users/{bob.id}", json={"deactivated": True}, headers=alice.headers
    )
    assert patched.status == 200
    assert await closed(ws) == WSCloseCode.POLICY_VIOLATION
    await error_of(await client.get(ME, headers=token.headers), 401)
    # Reactivating restores the account, not its tokens.
    await client.patch(
        f"/api/v1/admin/users/{bob.id}", json={"deactivated": False}, headers=alice.headers
    )
    await error_of(await client.get(ME, headers=token.headers), 401)
    assert (await _row(client, made["id"]))["revoked_at"] is not None


async def test_a_token_socket_sends_and_receives(client, alice, bob):
    token = as_token(alice.user, (await make_token(client, alice))["token"])
    room = await (
        await client.post(
            "/api/v1/rooms", json={"name": "ops", "kind": "public"}, headers=token.headers
        )
    ).json()
    ws = await connect(client, token)
    await ws.send_json({"type": "send", "room_id": room["id"], "body": "deployed", "ref": "1"})
    ack = await next_of(ws, "ack")
    assert ack["message"]["sender_id"] == alice.id
    await asyncio.wait_for(next_of(ws, "message.new"), 5)


async def test_concurrent_creates_do_not_pass_the_per_account_cap(client, alice):
    for n in range(MAX_TOKENS_PER_USER - 1):
        await make_token(client, alice, f"t{n}")
    for round_ in range(4):  # each round races 16 creates for the one free place
        racing = [
            client.post(TOKENS, json={"name": f"r{round_}.{n}"}, headers=alice.headers)
            for n in range(16)
        ]
        statuses = sorted(response.status for response in await asyncio.gather(*racing))
        assert statuses == [201] + [409] * 15, statuses
        listed = (await (await client.get(TOKENS, headers=alice.headers)).json())["items"]
        assert len(listed) == MAX_TOKENS_PER_USER
        revoked = await client.delete(f"{TOKENS}/{listed[0]['id']}", headers=alice.headers)
        assert revoked.status == 204
