"""Accounts and sessions (API.md "Accounts and sessions") on both engines."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from chat_server import create_app
from chat_server.config import Rate

from .helpers import PASSWORD, error_of, make_config, signup

SIGNUP = "/api/v1/auth/signup"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"
SECRET = "test-secret-key-" + "x" * 32


async def test_signup_returns_user_and_tokens(client):
    response = await client.post(
        SIGNUP, json={"username": "Alice.B-1_", "password": PASSWORD}, headers={"User-Agent": "t/1"}
    )
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"user", "access_token", "refresh_token", "expires_in"}
    assert body["user"]["username"] == "alice.b-1_"
    assert body["user"]["display_name"] == "alice.b-1_"
    assert body["user"]["bio"] == "" and body["user"]["avatar_media_id"] is None
    assert body["user"]["created_at"].endswith("Z") and len(body["user"]["created_at"]) == 24
    assert body["expires_in"] == 900
    me = await client.get(ME, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert (await me.json())["id"] == body["user"]["id"]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"username", "password"}),
        ({"username": "ab", "password": PASSWORD}, {"username"}),
        ({"username": "a" * 33, "password": PASSWORD}, {"username"}),
        ({"username": "bad name", "password": PASSWORD}, {"username"}),
        ({"username": "ünï", "password": PASSWORD}, {"username"}),
        ({"username": 123, "password": PASSWORD}, {"username"}),
        ({"username": None, "password": PASSWORD}, {"username"}),
        ({"username": "carol", "password": "short"}, {"password"}),
        ({"username": "carol", "password": "p" * 1025}, {"password"}),
        ({"username": "carol", "password": ["x"] * 9}, {"password"}),
        ({"username": "carol", "password": PASSWORD, "display_name": "d" * 65}, {"display_name"}),
        ({"username": "carol", "password": PASSWORD, "display_name": "a\x00b"}, {"display_name"}),
        ({"username": "carol", "password": PASSWORD, "display_name": 5}, {"display_name"}),
    ],
)
async def test_signup_rejects_bad_fields(client, payload, fields):
    error = await error_of(await client.post(SIGNUP, json=payload), 400)
    assert error["code"] == "invalid_request"
    assert set(error["details"]["fields"]) == fields


async def test_bad_bodies_get_the_error_shape(client):
    bad_json = await client.post(
        SIGNUP, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (await error_of(bad_json, 400))["code"] == "invalid_request"
    not_object = await client.post(SIGNUP, json=["alice"])
    assert (await error_of(not_object, 400))["code"] == "invalid_request"
    wrong_type = await client.post(
        SIGNUP, data=b"username=alice", headers={"Content-Type": "text/plain"}
    )
    assert (await error_of(wrong_type, 415))["code"] == "unsupported_media_type"
    huge = await client.post(SIGNUP, json={"username": "a", "pad": "x" * (1024 * 1024)})
    assert (await error_of(huge, 413))["code"] == "payload_too_large"
    deep = await client.post(
        SIGNUP, data=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert (await error_of(deep, 400))["code"] == "invalid_request"
    surrogate = await client.post(
        SIGNUP,
        data=b'{"username": "carol", "password": "\\ud800\\ud800xxxxxxxx"}',
        headers={"Content-Type": "application/json"},
    )
    assert (await error_of(surrogate, 400))["details"]["fields"] == {
        "password": "must be valid Unicode text without NUL characters"
    }


async def test_usernames_are_unique_case_insensitively(client, alice):
    response = await client.post(SIGNUP, json={"username": "ALICE", "password": PASSWORD})
    assert (await error_of(response, 409))["code"] == "conflict"


async def test_login_and_failures_look_the_same(client, alice):
    ok = await client.post(LOGIN, json={"username": "ALICE", "password": PASSWORD})
    assert ok.status == 200
    assert (await ok.json())["user"]["id"] == alice.id
    wrong = await error_of(
        await client.post(LOGIN, json={"username": "alice", "password": "wrong password"}), 401
    )
    unknown = await error_of(
        await client.post(LOGIN, json={"username": "nobody", "password": "wrong password"}), 401
    )
    assert wrong == unknown
    missing = await error_of(await client.post(LOGIN, json={"username": "alice"}), 400)
    assert set(missing["details"]["fields"]) == {"password"}


async def test_long_passwords_are_not_truncated(client):
    long_password = "é" * 100  # 200 bytes, far past bcrypt's 72
    await client.post(SIGNUP, json={"username": "longpw", "password": long_password})
    same_prefix = "é" * 99 + "e"
    bad = await client.post(LOGIN, json={"username": "longpw", "password": same_prefix})
    assert bad.status == 401
    good = await client.post(LOGIN, json={"username": "longpw", "password": long_password})
    assert good.status == 200


async def test_refresh_rotates_and_reuse_revokes_the_session(client, alice):
    first = await client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    assert first.status == 200
    rotated = await first.json()
    assert rotated["refresh_token"] != alice.refresh_token
    new_headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert (await client.get(ME, headers=new_headers)).status == 200
    # Reusing the old refresh token means it leaked: the whole session ends.
    reuse = await client.post(REFRESH, json={"refresh_token": alice.refresh_token})
    await error_of(reuse, 401)
    await error_of(await client.get(ME, headers=new_headers), 401)
    again = await client.post(REFRESH, json={"refresh_token": rotated["refresh_token"]})
    await error_of(again, 401)


async def test_token_types_are_not_interchangeable(client, alice):
    as_access = {"Authorization": f"Bearer {alice.refresh_token}"}
    await error_of(await client.get(ME, headers=as_access), 401)
    as_refresh = await client.post(REFRESH, json={"refresh_token": alice.access_token})
    await error_of(as_refresh, 401)


def _forge(claims: dict, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


async def test_forged_and_expired_tokens_are_refused(client, alice):
    valid = jwt.decode(alice.access_token, SECRET, algorithms=["HS256"])
    header, payload, signature = alice.access_token.split(".")
    none_header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    tampered_claims = valid | {"sub": str(alice.id + 1)}
    tampered_payload = jwt.utils.base64url_encode(json.dumps(tampered_claims).encode())
    tokens = {
        "alg none": f"{none_header.decode()}.{payload}.",
        "HS512": _forge(valid, algorithm="HS512"),
        "wrong key": _forge(valid, key="another-secret-key-" + "y" * 32),
        "tampered payload": f"{header}.{tampered_payload.decode()}.{signature}",
        "expired": _forge(valid | {"exp": int(time.time()) - 10}),
        "no exp": _forge({k: v for k, v in valid.items() if k != "exp"}),
        "no sid": _forge({k: v for k, v in valid.items() if k != "sid"}),
        "garbage": "not-a-token",
    }
    for name, token in tokens.items():
        response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401, name
        assert (await response.json())["error"]["code"] == "unauthorized"
    for header_value in ("Basic YWxpY2U6cHc=", "Bearer", "Bearer  "):
        response = await client.get(ME, headers={"Authorization": header_value})
        await error_of(response, 401)
    await error_of(await client.get(ME), 401)


async def test_logout_ends_the_session_at_once(client, alice):
    response = await client.post("/api/v1/auth/logout", headers=alice.headers)
    assert response.status == 204
    await error_of(await client.get(ME, headers=alice.headers), 401)
    await error_of(await client.post(REFRESH, json={"refresh_token": alice.refresh_token}), 401)


async def test_sessions_list_and_revoke(client, alice, bob):
    second = await client.post(
        LOGIN, json={"username": "alice", "password": PASSWORD}, headers={"User-Agent": "phone/2"}
    )
    other = await second.json()
    listed = await (await client.get("/api/v1/auth/sessions", headers=alice.headers)).json()
    assert len(listed["items"]) == 2
    current = [s for s in listed["items"] if s["current"]]
    assert len(current) == 1
    other_session = next(s for s in listed["items"] if not s["current"])
    assert other_session["user_agent"] == "phone/2"
    assert set(other_session) == {"id", "created_at", "last_used_at", "user_agent", "current"}
    # Bob cannot revoke Alice's session, and cannot learn it exists.
    path = f"/api/v1/auth/sessions/{other_session['id']}"
    await error_of(await client.delete(path, headers=bob.headers), 404)
    assert (await client.delete(path, headers=alice.headers)).status == 204
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    await error_of(await client.get(ME, headers=other_headers), 401)
    await error_of(await client.delete(path, headers=alice.headers), 404)
    await error_of(await client.delete("/api/v1/auth/sessions/abc", headers=alice.headers), 404)


async def test_password_change_revokes_other_sessions(client, alice):
    other = await (
        await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    ).json()
    path = "/api/v1/auth/password"
    wrong = await client.post(
        path,
        json={"old_password": "nope nope", "new_password": "new password 1"},
        headers=alice.headers,
    )
    await error_of(wrong, 401)
    short = await client.post(
        path, json={"old_password": PASSWORD, "new_password": "short"}, headers=alice.headers
    )
    assert set((await error_of(short, 400))["details"]["fields"]) == {"new_password"}
    ok = await client.post(
        path,
        json={"old_password": PASSWORD, "new_password": "new password 1"},
        headers=alice.headers,
    )
    assert ok.status == 204
    assert (await client.get(ME, headers=alice.headers)).status == 200
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    await error_of(await client.get(ME, headers=other_headers), 401)
    old_login = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    await error_of(old_login, 401)
    new_login = await client.post(LOGIN, json={"username": "alice", "password": "new password 1"})
    assert new_login.status == 200


async def test_login_rate_limit_per_ip_and_per_username(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, auth_rate=Rate(3, 60), trust_proxy=True)
    client = await aiohttp_client(create_app(config))
    await signup(client, "alice")  # the first of the username's 3 attempts
    for i in range(2):
        response = await client.post(
            LOGIN,
            json={"username": "alice", "password": "wrong password"},
            headers={"X-Forwarded-For": f"10.0.0.{i}"},
        )
        assert response.status == 401
    # The username has spent its 3 attempts (signup + 2), whatever the IP.
    limited = await client.post(
        LOGIN,
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "10.9.9.9"},
    )
    error = await error_of(limited, 429)
    assert error["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # One IP trying many usernames is limited too.
    for name in ("u1", "u2", "u3"):
        response = await client.post(
            LOGIN,
            json={"username": name, "password": "wrong password"},
            headers={"X-Forwarded-For": "10.1.1.1"},
        )
        assert response.status == 401
    limited_ip = await client.post(
        LOGIN,
        json={"username": "u4", "password": "wrong password"},
        headers={"X-Forwarded-For": "10.1.1.1"},
    )
    await error_of(limited_ip, 429)


async def test_users_and_sessions_survive_a_restart(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, secret_key=None)
    first = await aiohttp_client(create_app(config))
    account = await signup(first, "alice")
    await first.close()
    second = await aiohttp_client(create_app(config))
    me = await second.get(ME, headers=account.headers)
    assert me.status == 200
    assert (await me.json())["username"] == "alice"
    login = await second.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert login.status == 200
