"""Registration control: GET /server, the registration modes, the setup token and invites."""

from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chat_server import create_app, keys
from chat_server.db import Database, SignupRefused

from .helpers import PASSWORD, Account, create_room, error_of, make_config, signup
from .helpers.ws import connect, next_of

SIGNUP = "/api/v1/auth/signup"
INVITES = "/api/v1/invites"


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path, database_url: str):
    """A server in a given registration mode (data dir `node`, sharing the database)."""

    async def start(registration: str = "invite", node: str = "a", **extra: Any) -> TestClient:
        config = make_config(tmp_path / node, database_url, registration=registration, **extra)
        return await aiohttp_client(create_app(config))

    return start


def db_of(client: TestClient) -> Database:
    return client.app[keys.DB]


async def first_admin(client: TestClient, name: str = "root") -> Account:
    token = client.app[keys.SETUP].token
    assert token is not None
    return await signup(client, name, invite=token)


async def try_signup(client: TestClient, name: str, **extra: Any) -> Any:
    return await client.post(SIGNUP, json={"username": name, "password": PASSWORD, **extra})


async def new_invite(client: TestClient, account: Account, **body: Any) -> dict[str, Any]:
    response = await client.post(INVITES, json=body, headers=account.headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def my_invites(client: TestClient, account: Account, query: str = "") -> dict[str, Any]:
    response = await client.get(f"{INVITES}{query}", headers=account.headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def audit_actions(client: TestClient) -> list[tuple[str, int | None, int | None]]:
    return [(a.action, a.actor_id, a.target_id) for a in await db_of(client).audit_page(2**62, 100)]


# --- GET /server and the modes ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["open", "invite", "closed"])
async def test_server_info_in_each_mode(start, mode):
    client = await start(mode, server_name="Team chat", max_upload_mb=7)
    response = await client.get("/api/v1/server")
    assert response.status == 200
    info = await response.json()
    assert info == {
        "name": "Team chat",
        "version": "0.1.0",
        "feature_level": 2,
        "registration": mode,
        "setup_required": True,
        "max_upload_mb": 7,
        "vapid_public_key": info["vapid_public_key"],
    }
    # The server's P-256 public key, base64url as browsers' applicationServerKey takes it.
    assert re.fullmatch(r"B[A-Za-z0-9_-]{86}", info["vapid_public_key"])


async def test_signup_needs_an_invite_unless_open(start):
    invite_only = await start("invite")
    error = await error_of(await try_signup(invite_only, "eve"), 403)
    assert error["code"] == "forbidden" and "invite" in error["message"]
    closed = await start("closed", node="b")
    error = await error_of(await try_signup(closed, "eve"), 403)
    assert "closed" in error["message"]
    assert await db_of(closed).get_credentials("eve") is None
    open_ = await start("open", node="c")
    assert (await signup(open_, "eve")).user["is_admin"] is False


async def test_closed_mode_refuses_a_valid_invite_but_names_a_bad_one(start):
    client = await start("closed")
    admin = await first_admin(client)
    invite = await new_invite(client, admin)
    error = await error_of(await try_signup(client, "eve", invite=invite["code"]), 403)
    assert "closed" in error["message"]
    error = await error_of(await try_signup(client, "eve", invite="no-such-code"), 403)
    assert error["message"] == "unknown invite"
    assert (await my_invites(client, admin))["items"][0]["uses"] == 0


@pytest.mark.parametrize("mode", ["open", "invite"])
async def test_an_invite_that_is_not_valid_is_refused_and_nothing_is_created(start, mode):
    client = await start(mode)
    admin = await first_admin(client)
    expired = await new_invite(client, admin)
    await db_of(client).engine.write(
        "UPDATE invites SET expires_at = 1 WHERE id = $1", expired["id"]
    )
    used = await new_invite(client, admin)
    await signup(client, "first", invite=used["code"])
    revoked = await new_invite(client, admin)
    response = await client.delete(f"{INVITES}/{revoked['id']}", headers=admin.headers)
    assert response.status == 204
    for code, why in [
        (expired["code"], "expired"),
        (used["code"], "used up"),
        (revoked["code"], "revoked"),
        ("x" * 22, "unknown"),
    ]:
        error = await error_of(await try_signup(client, "eve", invite=code), 403)
        assert error["code"] == "forbidden" and why in error["message"]
    assert await db_of(client).get_credentials("eve") is None
    uses = {i["id"]: i["uses"] for i in (await my_invites(client, admin))["items"]}
    assert uses == {expired["id"]: 0, used["id"]: 1, revoked["id"]: 0}


async def test_a_taken_username_spends_no_use_of_the_invite(start):
    client = await start("invite")
    admin = await first_admin(client)
    invite = await new_invite(client, admin)
    error = await error_of(await try_signup(client, "ROOT", invite=invite["code"]), 409)
    assert error["details"]["fields"] == {"username": "taken"}
    assert (await my_invites(client, admin))["items"][0]["uses"] == 0
    assert (await signup(client, "fresh", invite=invite["code"])).user["is_admin"] is False


async def test_two_signups_racing_for_the_last_use_make_one_account(start):
    client = await start("invite")
    admin = await first_admin(client)
    invite = await new_invite(client, admin, max_uses=2)
    await signup(client, "early", invite=invite["code"])
    racers = [f"racer{n}" for n in range(6)]  # more than two, so they surely overlap
    responses = await asyncio.gather(
        *(try_signup(client, n, invite=invite["code"]) for n in racers)
    )
    assert sorted(r.status for r in responses) == [201] + [403] * (len(racers) - 1)
    names = [n for n in racers if await db_of(client).get_credentials(n)]
    assert len(names) == 1
    assert (await my_invites(client, admin))["items"][0]["uses"] == 2


async def test_inserts_racing_for_the_last_use_make_one_account(start):
    """The same race without HTTP and hashing in between, so the transactions overlap."""
    client = await start("invite")
    admin = await first_admin(client)
    invite = await new_invite(client, admin, max_uses=1)
    db = db_of(client)
    racers = [f"racer{n}" for n in range(8)]
    outcomes = await asyncio.gather(
        *(db.create_invited_user(n, n, "x", invite["code"]) for n in racers),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, SignupRefused) for o in outcomes if isinstance(o, BaseException))
    assert (await my_invites(client, admin))["items"][0]["uses"] == 1


async def test_an_invite_joins_its_rooms_and_the_members_see_it(start):
    client = await start("invite")
    admin = await first_admin(client)
    owner = await signup(client, "owner", invite=(await new_invite(client, admin))["code"])
    general = await create_room(client, owner, "general")
    secret = await create_room(client, owner, "secret", kind="private")
    gone = await create_room(client, owner, "gone")
    room_ids = [general["id"], secret["id"], gone["id"]]
    invite = await new_invite(client, owner, room_ids=room_ids)
    assert invite["room_ids"] == sorted(room_ids)
    await db_of(client).engine.write("UPDATE rooms SET deleted_at = 1 WHERE id = $1", gone["id"])
    ws = await connect(client, owner)
    try:
        newcomer = await signup(client, "newcomer", invite=invite["code"])
        seen = {}
        while len(seen) < 2:
            frame = await next_of(ws, "member.joined")
            assert frame["user"]["id"] == newcomer.id and frame["role"] == "member"
            seen[frame["room_id"]] = frame
        assert set(seen) == {general["id"], secret["id"]}
    finally:
        await ws.close()
    rooms = await client.get("/api/v1/rooms", headers=newcomer.headers)
    assert [r["name"] for r in (await rooms.json())["items"]] == ["general", "secret"]


async def test_an_invite_admits_only_while_its_creator_may_invite(start):
    """The creator's right to invite is checked at signup: a deactivated creator's
    invite is refused, and only the rooms they still manage (a server admin: public
    rooms) are joined."""
    client = await start("invite")
    admin = await first_admin(client)
    alice = await signup(client, "alice", invite=(await new_invite(client, admin))["code"])
    bob = await signup(client, "bob", invite=(await new_invite(client, admin))["code"])
    carol = await signup(client, "carol", invite=(await new_invite(client, admin))["code"])
    kept = await create_room(client, alice, "kept")
    lost = await create_room(client, alice, "lost", kind="private")
    members = f"/api/v1/rooms/{lost['id']}/members"
    for room in (kept, lost):
        response = await client.post(
            f"/api/v1/rooms/{room['id']}/members",
            json={"user_id": bob.id, "role": "admin"},
            headers=alice.headers,
        )
        assert response.status == 201, await response.text()
    by_bob = await new_invite(client, bob, room_ids=[kept["id"], lost["id"]], max_uses=5)
    by_admin = await new_invite(client, admin, room_ids=[kept["id"]], max_uses=5)
    by_carol = await new_invite(client, carol)
    response = await client.delete(f"{members}/{bob.id}", headers=alice.headers)
    assert response.status == 204
    await db_of(client).engine.write("UPDATE users SET is_admin = FALSE WHERE id = $1", admin.id)

    dave = await signup(client, "dave", invite=by_bob["code"])  # joins only what bob manages
    rooms = await client.get("/api/v1/rooms", headers=dave.headers)
    assert [r["name"] for r in (await rooms.json())["items"]] == ["kept"]
    erin = await signup(client, "erin", invite=by_admin["code"])  # admin no more: no room
    assert (await (await client.get("/api/v1/rooms", headers=erin.headers)).json())["items"] == []

    await db_of(client).engine.write("UPDATE users SET deactivated_at = 1 WHERE id = $1", carol.id)
    error = await error_of(await try_signup(client, "frank", invite=by_carol["code"]), 403)
    assert error["code"] == "forbidden" and "deactivated" in error["message"]
    assert await db_of(client).get_credentials("frank") is None
    checked = await (await client.get(f"{INVITES}/{by_carol['code']}")).json()
    assert checked["valid"] is False


# --- the setup token ----------------------------------------------------------------------


async def test_the_setup_token_makes_one_admin_in_any_mode(start, tmp_path):
    client = await start("closed")
    setup = client.app[keys.SETUP]
    assert setup.required and setup.token is not None
    token_file = tmp_path / "a" / "data" / "setup_token"
    assert token_file.read_text().strip() == setup.token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert f"/#setup={setup.token}" in (setup.banner("https://chat.example.org") or "")
    admin = await first_admin(client)
    assert admin.user["is_admin"] is True
    assert not token_file.exists()
    info = await (await client.get("/api/v1/server")).json()
    assert info["setup_required"] is False
    error = await error_of(await try_signup(client, "again", invite=setup.token), 403)
    assert error["code"] == "forbidden"
    assert await db_of(client).get_credentials("again") is None
    later = await start("closed", node="b")
    assert later.app[keys.SETUP].required is False
    assert later.app[keys.SETUP].banner("http://x") is None


async def test_nodes_sharing_the_database_share_one_setup_token(start):
    first = await start("invite", node="a")
    other = await start("invite", node="b")
    token = first.app[keys.SETUP].token
    assert token is not None
    assert other.app[keys.SETUP].required and other.app[keys.SETUP].token is None
    assert "data dir of the node that made it" in (other.app[keys.SETUP].banner("http://x") or "")
    restarted = await start("invite", node="a")
    assert restarted.app[keys.SETUP].token == token  # its file still matches: the same link
    admin = await signup(other, "root", invite=token)  # any node takes the token
    assert admin.user["is_admin"] is True


async def test_an_admin_from_the_shell_ends_the_setup_token(start):
    client = await start("invite")
    token = client.app[keys.SETUP].token
    db = db_of(client)
    await db.create_user("shell", "shell", "x", is_admin=True)
    error = await error_of(await try_signup(client, "late", invite=token), 403)
    assert error["code"] == "forbidden"
    assert await db.get_credentials("late") is None


# --- invites ---------------------------------------------------------------------------


async def test_an_invite_has_the_contract_shape(start):
    client = await start("invite", public_url="https://chat.example.org/")
    admin = await first_admin(client)
    invite = await new_invite(client, admin, max_uses=3, expires_in=60)
    assert set(invite) == {
        "id",
        "code",
        "url",
        "max_uses",
        "uses",
        "expires_at",
        "created_by",
        "room_ids",
        "created_at",
        "revoked",
    }
    assert invite["url"] == f"https://chat.example.org/#invite={invite['code']}"
    assert len(invite["code"]) == 22 and invite["max_uses"] == 3 and invite["uses"] == 0
    assert invite["created_by"] == admin.id and invite["revoked"] is False
    default = await new_invite(client, admin)
    assert default["max_uses"] == 1 and default["room_ids"] == []
    for body in ({"max_uses": 0}, {"max_uses": 1001}, {"expires_in": 59}, {"room_ids": "1"}):
        error = await error_of(await client.post(INVITES, json=body, headers=admin.headers), 400)
        assert set(error["details"]["fields"]) == set(body)
    too_many = {"room_ids": list(range(1, 22))}
    response = await client.post(INVITES, json=too_many, headers=admin.headers)
    await error_of(response, 400)


async def test_invites_only_to_rooms_i_manage(start):
    client = await start("open")
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    public = await create_room(client, alice, "public")
    private = await create_room(client, alice, "private", kind="private")
    dm = await (
        await client.post("/api/v1/dm", json={"user_id": alice.id}, headers=bob.headers)
    ).json()
    before = await audit_actions(client)
    for room, status in [(public, 403), (private, 404), (dm, 403), ({"id": 999999}, 404)]:
        response = await client.post(INVITES, json={"room_ids": [room["id"]]}, headers=bob.headers)
        await error_of(response, status)
    assert await audit_actions(client) == before  # nothing audited for what failed
    await db_of(client).engine.write("UPDATE users SET is_admin = TRUE WHERE id = $1", bob.id)
    invite = await new_invite(client, bob, room_ids=[public["id"]])
    assert invite["room_ids"] == [public["id"]]
    # a server admin moderates a private room, but gets nobody into it
    for room in (private, dm):
        response = await client.post(INVITES, json={"room_ids": [room["id"]]}, headers=bob.headers)
        await error_of(response, 403)
    await db_of(client).engine.write("UPDATE users SET is_bot = TRUE WHERE id = $1", alice.id)
    await error_of(await client.post(INVITES, json={}, headers=alice.headers), 403)


async def test_invite_lists_revocation_and_their_audit(start):
    client = await start("invite")
    admin = await first_admin(client)
    bob = await signup(client, "bob", invite=(await new_invite(client, admin))["code"])
    carol = await signup(client, "carol", invite=(await new_invite(client, admin))["code"])
    bobs = [await new_invite(client, bob) for _ in range(3)]
    carols = await new_invite(client, carol)
    mine = await my_invites(client, bob, "?limit=2")
    assert [i["id"] for i in mine["items"]] == [bobs[2]["id"], bobs[1]["id"]]
    rest = await my_invites(client, bob, f"?limit=2&cursor={mine['next_cursor']}")
    assert [i["id"] for i in rest["items"]] == [bobs[0]["id"]] and rest["next_cursor"] is None
    everyone = await my_invites(client, admin)
    assert {i["created_by"] for i in everyone["items"]} == {admin.id, bob.id, carol.id}
    assert len(everyone["items"]) == 6

    before = await audit_actions(client)
    for account, invite_id in [(carol, bobs[0]["id"]), (bob, 999999)]:
        response = await client.delete(f"{INVITES}/{invite_id}", headers=account.headers)
        await error_of(response, 404)
    assert await audit_actions(client) == before
    assert (await client.delete(f"{INVITES}/{bobs[0]['id']}", headers=bob.headers)).status == 204
    assert (await client.delete(f"{INVITES}/{carols['id']}", headers=admin.headers)).status == 204
    assert (await client.delete(f"{INVITES}/{carols['id']}", headers=admin.headers)).status == 204
    assert (await audit_actions(client))[:2] == [
        ("invite.revoke", admin.id, carols["id"]),
        ("invite.revoke", bob.id, bobs[0]["id"]),
    ]
    creations = [a for a in await audit_actions(client) if a[0] == "invite.create"]
    assert ("invite.create", carol.id, carols["id"]) in creations and len(creations) == 6
    revoked = {i["id"]: i["revoked"] for i in (await my_invites(client, bob))["items"]}
    assert revoked == {bobs[0]["id"]: True, bobs[1]["id"]: False, bobs[2]["id"]: False}


async def test_checking_an_invite_needs_no_account(start):
    client = await start("invite", server_name="Team chat")
    admin = await first_admin(client)
    room = await create_room(client, admin, "welcome")
    invite = await new_invite(client, admin, room_ids=[room["id"]])
    response = await client.get(f"{INVITES}/{invite['code']}")
    assert await response.json() == {
        "valid": True,
        "server_name": "Team chat",
        "rooms": [{"id": room["id"], "name": "welcome"}],
    }
    await client.delete(f"{INVITES}/{invite['id']}", headers=admin.headers)
    for code in (invite["code"], "unknown-code", "nul%00"):
        response = await client.get(f"{INVITES}/{code}")
        assert response.status == 200
        assert await response.json() == {"valid": False, "server_name": "Team chat", "rooms": []}


async def test_checking_invites_is_rate_limited_per_ip(start):
    client = await start("invite", auth_rate="2/60")
    for _ in range(2):
        assert (await client.get(f"{INVITES}/guess")).status == 200
    error = await error_of(await client.get(f"{INVITES}/guess"), 429)
    assert error["code"] == "rate_limited"
