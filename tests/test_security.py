"""The security table (SECURITY.md), one clearly named test per row, on both engines.

Every test here also runs under `no_secrets_in_logs`: whatever the server
logged during it must not contain a password, a token or a message body.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from chat_server import create_app
from chat_server.config import Rate

from .helpers import PASSWORD, create_room, error_of, make_config, messages_path, send, signup
from .helpers.media import get_media, uploaded
from .helpers.ws import WS, next_of

SECRET = "test-secret-key-" + "x" * 32
ME = "/api/v1/users/me"
BODY_MARKER = "s3cr3t-message-body"


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture):
    """Row "logs without secrets", for every test of this file."""
    caplog.set_level(logging.INFO)  # what a deployment logs; the server's own loggers at DEBUG
    caplog.set_level(logging.DEBUG, logger="chat_server")
    yield
    text = caplog.text
    assert PASSWORD not in text
    assert "eyJ" not in text  # the start of every JWT header
    assert BODY_MARKER not in text


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(account, **overrides: Any) -> dict[str, Any]:
    real = jwt.decode(account.access_token, options={"verify_signature": False})
    return real | overrides


async def _refused_everywhere(client, token: str) -> None:
    """401 on REST, and 401 before the WebSocket upgrade, and via an auth frame."""
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert (await error_of(response, 401))["code"] == "unauthorized"
    with pytest.raises(WSServerHandshakeError) as info:
        await client.ws_connect(WS, headers={"Authorization": f"Bearer {token}"})
    assert info.value.status == 401
    ws = await client.ws_connect(WS)
    await ws.send_json({"type": "auth", "token": token})
    frame = await ws.receive(timeout=5)
    assert frame.type == WSMsgType.TEXT and json.loads(frame.data)["code"] == "unauthorized"
    closing = await ws.receive(timeout=5)
    assert closing.type == WSMsgType.CLOSE and closing.data == 1008
    await ws.close()


async def _closed(ws) -> int:
    """The close code of a socket the server closes, skipping frames queued before it."""
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type == WSMsgType.CLOSE:
            return msg.data
        assert msg.type == WSMsgType.TEXT, msg


# --- tokens ----------------------------------------------------------------------------


async def test_jwt_alg_none_is_refused(client, alice):
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(alice))}."
    await _refused_everywhere(client, token)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_jwt_other_hmac_algorithms_with_the_right_key_are_refused(client, alice, algorithm):
    await _refused_everywhere(client, jwt.encode(_claims(alice), SECRET, algorithm=algorithm))


async def test_jwt_rs256_looking_token_is_refused(client, alice):
    fake_signature = base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b"=").decode()
    header = _b64({"alg": "RS256", "typ": "JWT"})
    await _refused_everywhere(client, f"{header}.{_b64(_claims(alice))}.{fake_signature}")


async def test_jwt_signed_with_a_wrong_key_is_refused(client, alice):
    token = jwt.encode(_claims(alice), "another-key-" + "y" * 40, algorithm="HS256")
    await _refused_everywhere(client, token)


async def test_jwt_tampered_payload_is_refused(client, alice, bob):
    header, _, signature = alice.access_token.split(".")
    forged = f"{header}.{_b64(_claims(alice, sub=str(bob.id)))}.{signature}"
    await _refused_everywhere(client, forged)


async def test_jwt_without_exp_is_refused(client, alice):
    claims = _claims(alice)
    del claims["exp"]
    await _refused_everywhere(client, jwt.encode(claims, SECRET, algorithm="HS256"))


async def test_jwt_expired_is_refused(client, alice):
    past = int(time.time()) - 3600
    token = jwt.encode(_claims(alice, iat=past - 900, exp=past), SECRET, algorithm="HS256")
    await _refused_everywhere(client, token)


async def test_refresh_token_is_not_an_access_token(client, alice):
    await _refused_everywhere(client, alice.refresh_token)
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.access_token})
    assert (await error_of(response, 401))["code"] == "unauthorized"


# --- sessions --------------------------------------------------------------------------


async def test_logout_refuses_the_session_everywhere_and_closes_its_sockets(client, alice):
    ws = await client.ws_connect(WS, headers=alice.headers)
    await next_of(ws, "ready")
    assert (await client.post("/api/v1/auth/logout", headers=alice.headers)).status == 204
    assert await _closed(ws) == 1008
    await _refused_everywhere(client, alice.access_token)
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token}
    )
    assert response.status == 401


async def test_revoked_session_is_refused_everywhere_and_its_sockets_close(client, alice):
    login = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    other = (await login.json())["access_token"]
    ws = await client.ws_connect(WS, headers={"Authorization": f"Bearer {other}"})
    await next_of(ws, "ready")
    sessions = (await (await client.get("/api/v1/auth/sessions", headers=alice.headers)).json())[
        "items"
    ]
    (victim,) = [s for s in sessions if not s["current"]]
    response = await client.delete(f"/api/v1/auth/sessions/{victim['id']}", headers=alice.headers)
    assert response.status == 204
    assert await _closed(ws) == 1008
    await _refused_everywhere(client, other)
    assert (await client.get(ME, headers=alice.headers)).status == 200


async def test_password_change_refuses_other_sessions_everywhere_and_closes_them(client, alice):
    login = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    other = (await login.json())["access_token"]
    ws = await client.ws_connect(WS, headers={"Authorization": f"Bearer {other}"})
    await next_of(ws, "ready")
    response = await client.post(
        "/api/v1/auth/password",
        json={"old_password": PASSWORD, "new_password": PASSWORD + "!"},
        headers=alice.headers,
    )
    assert response.status == 204
    assert await _closed(ws) == 1008
    await _refused_everywhere(client, other)
    assert (await client.get(ME, headers=alice.headers)).status == 200


# --- cross-site WebSocket --------------------------------------------------------------


async def test_cross_site_websocket_is_refused_before_the_upgrade(client, alice):
    for headers in (
        {**alice.headers, "Origin": "https://evil.example"},  # even with a valid token
        {"Origin": "https://evil.example"},  # the browser auth-frame route
        {**alice.headers, "Origin": "null"},
        {**alice.headers, "Origin": f"http://{client.host}:{client.port}.evil.example"},
    ):
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect(WS, headers=headers)
        assert info.value.status == 403, headers


# --- IDOR ------------------------------------------------------------------------------


async def test_idor_private_rooms_are_invisible(client, alice, bob):
    room = await create_room(client, alice, "secret", kind="private")
    base = f"/api/v1/rooms/{room['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"name": "pwned"}),
        ("POST", f"{base}/join", None),
        ("POST", f"{base}/leave", None),
        ("GET", f"{base}/members", None),
    ]:
        response = await client.request(method, path, json=body, headers=bob.headers)
        assert (await error_of(response, 404))["code"] == "not_found", (method, path)
    listed = await (await client.get("/api/v1/rooms/public", headers=bob.headers)).json()
    assert room["id"] not in [r["id"] for r in listed["items"]]
    got = await (await client.get(base, headers=alice.headers)).json()
    assert got["name"] == "secret" and got["member_count"] == 1


async def test_idor_messages_of_others(client, alice, bob):
    private = await create_room(client, alice, "secret", kind="private")
    hidden = await send(client, alice, private, BODY_MARKER)
    path = messages_path(private)
    for method, url, body in [
        ("GET", path, None),
        ("POST", path, {"body": "hi"}),
        ("PATCH", f"{path}/{hidden['id']}", {"body": "pwned"}),
        ("DELETE", f"{path}/{hidden['id']}", None),
        ("POST", f"/api/v1/rooms/{private['id']}/read", {"seq": 1}),
    ]:
        response = await client.request(method, url, json=body, headers=bob.headers)
        assert (await error_of(response, 404))["code"] == "not_found", (method, url)
    found = await client.get("/api/v1/search", params={"q": BODY_MARKER}, headers=bob.headers)
    assert (await found.json())["items"] == []
    # In a public room bob has joined, alice's message is visible but not his to change.
    public = await create_room(client, alice, "lobby")
    assert (await client.post(f"/api/v1/rooms/{public['id']}/join", headers=bob.headers)).ok
    mine = await send(client, alice, public, "mine")
    url = f"{messages_path(public)}/{mine['id']}"
    response = await client.patch(url, json={"body": "pwned"}, headers=bob.headers)
    assert (await error_of(response, 403))["code"] == "forbidden"
    assert (await error_of(await client.delete(url, headers=bob.headers), 403))["code"] == (
        "forbidden"
    )
    history = await (await client.get(messages_path(public), headers=alice.headers)).json()
    assert [m["body"] for m in history["items"]] == ["mine"]


async def test_idor_members_cannot_be_managed_by_others(client, alice, bob):
    carol = await signup(client, "carol")
    private = await create_room(client, alice, "secret", kind="private")
    base = f"/api/v1/rooms/{private['id']}/members"
    response = await client.post(base, json={"user_id": bob.id}, headers=bob.headers)
    assert (await error_of(response, 404))["code"] == "not_found"
    response = await client.delete(f"{base}/{alice.id}", headers=bob.headers)
    assert (await error_of(response, 404))["code"] == "not_found"
    public = await create_room(client, alice, "lobby")
    for account in (bob, carol):
        assert (await client.post(f"/api/v1/rooms/{public['id']}/join", headers=account.headers)).ok
    base = f"/api/v1/rooms/{public['id']}/members"
    response = await client.delete(f"{base}/{carol.id}", headers=bob.headers)  # member kicks
    assert (await error_of(response, 403))["code"] == "forbidden"
    response = await client.post(
        base, json={"user_id": carol.id, "role": "admin"}, headers=bob.headers
    )
    assert (await error_of(response, 403))["code"] == "forbidden"
    members = await (await client.get(base, headers=alice.headers)).json()
    assert {m["user"]["id"]: m["role"] for m in members["items"]} == {
        alice.id: "owner",
        bob.id: "member",
        carol.id: "member",
    }


async def test_idor_media_of_others_is_invisible(client, alice, bob):
    body = await uploaded(client, alice, b"private bytes " + BODY_MARKER.encode(), filename="a.txt")
    for suffix in ("", "/thumbnail?size=96"):
        response = await get_media(client, bob, body["id"], suffix)
        assert (await error_of(response, 404))["code"] == "not_found", suffix
    # Attaching someone else's media to your own message is refused too.
    room = await create_room(client, bob, "bobs")
    response = await client.post(
        messages_path(room),
        json={"body": "x", "attachments": [body["id"]]},
        headers=bob.headers,
    )
    assert set((await error_of(response, 400))["details"]["fields"]) == {"attachments"}
    response = await client.patch(ME, json={"avatar_media_id": body["id"]}, headers=bob.headers)
    assert response.status in (400, 404), await response.text()
    assert (await get_media(client, alice, body["id"])).status == 200


async def test_idor_sessions_of_others(client, alice, bob):
    sessions = await (await client.get("/api/v1/auth/sessions", headers=alice.headers)).json()
    (alice_session,) = sessions["items"]
    response = await client.delete(
        f"/api/v1/auth/sessions/{alice_session['id']}", headers=bob.headers
    )
    assert (await error_of(response, 404))["code"] == "not_found"
    assert (await client.get(ME, headers=alice.headers)).status == 200
    mine = await (await client.get("/api/v1/auth/sessions", headers=bob.headers)).json()
    assert alice_session["id"] not in [s["id"] for s in mine["items"]]


# --- uploads ---------------------------------------------------------------------------


async def test_upload_with_spoofed_type_is_sniffed(client, alice):
    html = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
    body = await uploaded(client, alice, html, filename="cat.png", content_type="image/png")
    assert not body["content_type"].startswith("image/")
    response = await get_media(client, alice, body["id"])
    assert "html" not in response.headers["Content-Type"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("payload", "filename", "declared"),
    [
        (b"<!doctype html><script>alert(1)</script>", "x.html", "text/html"),
        (b"<html><body onload=alert(1)>", "x.htm", "text/html"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "x.svg",
            "image/svg+xml",
        ),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "y.svg",
            "image/svg+xml",
        ),
    ],
)
async def test_html_and_svg_uploads_are_served_as_attachment_with_nosniff(
    client, alice, payload, filename, declared
):
    body = await uploaded(client, alice, payload, filename=filename, content_type=declared)
    assert "html" not in body["content_type"] and "svg" not in body["content_type"]
    response = await get_media(client, alice, body["id"])
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "html" not in response.headers["Content-Type"]
    assert "svg" not in response.headers["Content-Type"]


async def test_upload_traversal_names_stay_inside_the_media_dir(client, alice, tmp_path):
    for name in ("../../../../tmp/evil.txt", "..\\..\\evil.txt", "/etc/passwd", "a/../../b.txt"):
        body = await uploaded(client, alice, b"traversal " + name.encode(), filename=name)
        assert "/" not in body["filename"] and "\\" not in body["filename"], body
        assert not body["filename"].startswith(".."), body
        disposition = (await get_media(client, alice, body["id"])).headers["Content-Disposition"]
        assert "/" not in disposition.split(";")[1] and ".." not in disposition.split(";")[1]
    assert not (tmp_path / "evil.txt").exists()
    assert not list(tmp_path.parent.glob("evil.txt"))


# --- brute force -----------------------------------------------------------------------


@pytest.fixture
async def limited(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, auth_rate=Rate(5, 60), trust_proxy=True)
    return await aiohttp_client(create_app(config))


async def _login(client, username: str, ip: str, password: str = "wrong password"):
    return await client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": ip},
    )


async def test_brute_force_from_one_ip_is_rate_limited(limited):
    statuses = [(await _login(limited, f"user{n}", "203.0.113.7")).status for n in range(5)]
    assert statuses == [401] * 5
    response = await _login(limited, "user99", "203.0.113.7")
    assert (await error_of(response, 429))["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert (await _login(limited, "user99", "203.0.113.8")).status == 401  # another IP


async def test_brute_force_on_one_username_is_rate_limited(limited):
    await signup(limited, "target")  # counts as one attempt on the name
    statuses = [(await _login(limited, "target", f"198.51.100.{n}")).status for n in range(5)]
    assert statuses == [401] * 4 + [429], statuses  # 5 per 60 s, every IP different
    response = await _login(limited, "target", "198.51.100.200", PASSWORD)  # even the right one
    assert (await error_of(response, 429))["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    response = await _login(limited, "TARGET", "198.51.100.201", PASSWORD)  # case-insensitive
    assert response.status == 429


# --- SQL metacharacters ----------------------------------------------------------------

NASTY = ["' OR 1=1 --", '"; DROP TABLE users; --', "%", "_", "\\", "a'b\"c%d_e\\f", "1; SELECT 1"]


async def _ok_or_400(response) -> Any:
    assert response.status != 500, await response.text()
    if response.status == 400:
        assert (await response.json())["error"]["code"] == "invalid_request"
        return None
    assert response.status in (200, 201), await response.text()
    return await response.json()


@pytest.mark.parametrize("nasty", NASTY)
async def test_sql_metacharacters_are_data_in_every_string_field(client, alice, nasty):
    # signup username (the pattern refuses most; never a 500) and display_name
    await _ok_or_400(
        await client.post("/api/v1/auth/signup", json={"username": nasty, "password": PASSWORD})
    )
    login = await client.post("/api/v1/auth/login", json={"username": nasty, "password": nasty * 8})
    assert login.status in (400, 401), await login.text()
    me = await _ok_or_400(
        await client.patch(ME, json={"display_name": nasty, "bio": nasty}, headers=alice.headers)
    )
    assert (me["display_name"], me["bio"]) == (nasty, nasty)
    room = await _ok_or_400(
        await client.post(
            "/api/v1/rooms",
            json={"name": nasty, "topic": nasty, "kind": "public"},
            headers=alice.headers,
        )
    )
    assert (room["name"], room["topic"]) == (nasty, nasty)
    message = await _ok_or_400(
        await client.post(
            messages_path(room),
            json={"body": f"{nasty} {BODY_MARKER}", "client_id": nasty},
            headers=alice.headers,
        )
    )
    assert (message["body"], message["client_id"]) == (f"{nasty} {BODY_MARKER}", nasty)
    for path, params in [
        ("/api/v1/search", {"q": nasty}),
        ("/api/v1/users", {"q": nasty}),
        ("/api/v1/rooms/public", {"q": nasty}),
        ("/api/v1/rooms/public", {"cursor": nasty}),
        ("/api/v1/users", {"cursor": nasty}),
        ("/api/v1/search", {"q": "x", "cursor": nasty}),
        (messages_path(room), {"before_seq": nasty}),
    ]:
        await _ok_or_400(await client.get(path, params=params, headers=alice.headers))
    # A wildcard is not a wildcard: `%` and `_` match only themselves.
    users = await (
        await client.get("/api/v1/users", params={"q": "%"}, headers=alice.headers)
    ).json()
    assert all("%" in (u["username"] + u["display_name"]) for u in users["items"])
    rooms = await (
        await client.get("/api/v1/rooms/public", params={"q": "_"}, headers=alice.headers)
    ).json()
    assert all("_" in r["name"] for r in rooms["items"])
    # Everything is still there, verbatim.
    stored = await (await client.get(messages_path(room), headers=alice.headers)).json()
    assert [m["body"] for m in stored["items"]] == [f"{nasty} {BODY_MARKER}"]
    assert (await (await client.get(ME, headers=alice.headers)).json())["bio"] == nasty
    assert (
        await client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    ).status == 200
