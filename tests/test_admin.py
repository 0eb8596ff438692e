"""Server administration: /admin/users and /admin/audit, deactivation, erasure and its job."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiohttp import WSMsgType

from chat_server import create_app, jobs, keys
from chat_server.db import AccountDeactivated, Database, LastAdmin
from chat_server.models import Actor, now_ms

from .helpers import PASSWORD, Account, create_room, error_of, join, messages_path, send, signup
from .helpers.ws import connect, next_of

ADMIN = "/api/v1/admin"
USERS = f"{ADMIN}/users"
AUDIT = f"{ADMIN}/audit"
LOGIN = "/api/v1/auth/login"


async def _make_admin(client, account: Account) -> None:
    """The first admin, as the setup token or `create-user --admin` would make it."""
    await client.app[keys.DB].engine.execute(
        "UPDATE users SET is_admin = TRUE WHERE id = $1", account.id
    )


async def _patch(client, admin: Account, user_id: int, **body):
    return await client.patch(f"{USERS}/{user_id}", json=body, headers=admin.headers)


async def _audit(client, admin: Account) -> list[dict]:
    response = await client.get(f"{AUDIT}?limit=100", headers=admin.headers)
    assert response.status == 200
    return (await response.json())["items"]


async def _closed(ws) -> int:
    """The close code of a socket the server closes, skipping frames queued before it."""
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type == WSMsgType.CLOSE:
            return msg.data
        assert msg.type == WSMsgType.TEXT, msg


async def test_admin_routes_are_for_admins_only(client, alice, bob):
    routes = [
        ("GET", USERS),
        ("POST", USERS),
        ("PATCH", f"{USERS}/{bob.id}"),
        ("POST", f"{USERS}/{bob.id}/erase"),
        ("GET", AUDIT),
    ]
    for method, path in routes:
        response = await client.request(method, path, json={})
        assert (await error_of(response, 401))["code"] == "unauthorized"
        response = await client.request(method, path, json={}, headers=alice.headers)
        assert (await error_of(response, 403))["code"] == "forbidden", path
    assert (await client.get(f"/api/v1/users/{bob.id}", headers=bob.headers)).status == 200


async def test_list_search_state_and_paging(client, alice, bob):
    await _make_admin(client, alice)
    await signup(client, "bobby", display_name="Roberta")
    carol = await signup(client, "carol")
    response = await client.get(USERS, headers=alice.headers)
    body = await response.json()
    assert [u["username"] for u in body["items"]] == ["alice", "bob", "bobby", "carol"]
    first = body["items"][0]
    assert first["is_admin"] is True and first["session_count"] == 1
    assert first["last_seen_at"] is not None and first["deactivated"] is False
    # q: a prefix of the username or the display name, any case
    response = await client.get(f"{USERS}?q=BOB", headers=alice.headers)
    assert [u["username"] for u in (await response.json())["items"]] == ["bob", "bobby"]
    response = await client.get(f"{USERS}?q=rob", headers=alice.headers)
    assert [u["username"] for u in (await response.json())["items"]] == ["bobby"]
    # state
    assert (await _patch(client, alice, carol.id, deactivated=True)).status == 200
    response = await client.get(f"{USERS}?state=deactivated", headers=alice.headers)
    [gone] = (await response.json())["items"]
    assert gone["id"] == carol.id and gone["deactivated"] and gone["session_count"] == 0
    response = await client.get(f"{USERS}?state=active", headers=alice.headers)
    assert carol.id not in [u["id"] for u in (await response.json())["items"]]
    # paging
    seen, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(USERS + query, headers=alice.headers)).json()
        seen += [u["username"] for u in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["alice", "bob", "bobby", "carol"]
    for query in ("?state=gone", "?cursor=%25", "?limit=0"):
        response = await client.get(USERS + query, headers=alice.headers)
        assert (await error_of(response, 400))["code"] == "invalid_request"


async def test_create_user(client, alice):
    await _make_admin(client, alice)
    body = {"username": "Dave", "password": PASSWORD, "display_name": "Dave D", "is_admin": True}
    response = await client.post(USERS, json=body, headers=alice.headers)
    assert response.status == 201
    created = await response.json()
    assert created["username"] == "dave" and created["display_name"] == "Dave D"
    assert created["is_admin"] is True and created["session_count"] == 0
    assert created["last_seen_at"] is None
    response = await client.post(LOGIN, json={"username": "dave", "password": PASSWORD})
    assert response.status == 200
    response = await client.post(USERS, json=body | {"username": "DAVE"}, headers=alice.headers)
    error = await error_of(response, 409)
    assert error["details"]["fields"] == {"username": "taken"}
    bad = [
        ({"username": "x", "password": PASSWORD}, "username"),
        ({"username": "erin", "password": "short"}, "password"),
        ({"username": "erin", "password": PASSWORD, "is_admin": "yes"}, "is_admin"),
        ({"username": "erin", "password": PASSWORD, "display_name": "x" * 65}, "display_name"),
    ]
    for fields, name in bad:
        response = await client.post(USERS, json=fields, headers=alice.headers)
        assert name in (await error_of(response, 400))["details"]["fields"]
    [entry] = await _audit(client, alice)
    assert entry["action"] == "user.create" and entry["target_id"] == created["id"]
    assert entry["actor_id"] == alice.id and entry["details"] == {"is_admin": True}


async def test_promote_and_demote_apply_at_once(client, alice, bob):
    await _make_admin(client, alice)
    assert (await client.get(USERS, headers=bob.headers)).status == 403
    response = await _patch(client, alice, bob.id, is_admin=True)
    assert response.status == 200 and (await response.json())["is_admin"] is True
    assert (await client.get(USERS, headers=bob.headers)).status == 200  # the same token
    response = await _patch(client, bob, bob.id, is_admin=False)
    assert response.status == 200 and (await response.json())["is_admin"] is False
    assert (await client.get(USERS, headers=bob.headers)).status == 403
    assert (await _patch(client, alice, bob.id, is_admin=False)).status == 200  # no change
    actions = [(e["action"], e["actor_id"], e["target_id"]) for e in await _audit(client, alice)]
    assert actions == [("user.demote", bob.id, bob.id), ("user.promote", alice.id, bob.id)]
    assert (await _patch(client, alice, 10**9, is_admin=True)).status == 404
    response = await _patch(client, alice, bob.id, deactivated="no")
    assert (await error_of(response, 400))["details"]["fields"] == {"deactivated": "true or false"}


async def test_the_last_admin_stays(client, alice, bob):
    await _make_admin(client, alice)
    for body in ({"is_admin": False}, {"deactivated": True}):
        response = await _patch(client, alice, alice.id, **body)
        assert (await error_of(response, 409))["code"] == "conflict"
    response = await client.post(f"{USERS}/{alice.id}/erase", headers=alice.headers)
    await error_of(response, 409)
    assert await _audit(client, alice) == []  # failed actions leave no entry
    await _patch(client, alice, bob.id, is_admin=True)
    assert (await _patch(client, bob, alice.id, is_admin=False)).status == 200
    await error_of(await _patch(client, bob, bob.id, deactivated=True), 409)
    # a deactivated admin does not count as one
    await _patch(client, bob, alice.id, is_admin=True)
    assert (await _patch(client, bob, alice.id, deactivated=True)).status == 200
    await error_of(await _patch(client, bob, bob.id, is_admin=False), 409)


async def test_concurrent_demotions_of_the_last_two_admins(client, alice, bob):
    db: Database = client.app[keys.DB]
    for _ in range(5):
        for account in (alice, bob):
            await _make_admin(client, account)
        outcomes = await asyncio.gather(
            db.change_account(Actor(alice.id, ""), bob.id, is_admin=False, deactivated=None),
            db.change_account(Actor(bob.id, ""), alice.id, is_admin=False, deactivated=None),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["LastAdmin", "tuple"], outcomes
        admins = await db.engine.fetchval(
            "SELECT count(*) FROM users WHERE is_admin AND deactivated_at IS NULL"
        )
        assert admins == 1
    survivor = alice if (await db.get_user(alice.id)).is_admin else bob  # type: ignore[union-attr]
    demotions = [e for e in await _audit(client, survivor) if e["action"] == "user.demote"]
    assert len(demotions) == 5
    with pytest.raises(LastAdmin):  # the survivor cannot go either
        await db.change_account(
            Actor(survivor.id, ""), survivor.id, is_admin=False, deactivated=None
        )


async def test_deactivation_ends_sessions_memberships_and_logins(client, alice, bob):
    await _make_admin(client, alice)
    carol = await signup(client, "carol")
    general = await create_room(client, carol, "general")
    other = await create_room(client, carol, "other", kind="private")
    await join(client, bob, general)
    response = await client.post(
        f"/api/v1/rooms/{other['id']}/members", json={"user_id": bob.id}, headers=carol.headers
    )
    assert response.status == 201
    bob_ws = await connect(client, bob)
    carol_ws = await connect(client, carol)

    response = await _patch(client, alice, bob.id, deactivated=True)
    assert response.status == 200
    account = await response.json()
    assert account["deactivated"] is True and account["session_count"] == 0
    assert await _closed(bob_ws) == 1008
    left = {}
    while len(left) < 2:
        frame = await next_of(carol_ws, "member.left")
        left[frame["room_id"]] = frame
    assert set(left) == {general["id"], other["id"]}
    assert all(f["user"]["id"] == bob.id and f["reason"] == "deactivated" for f in left.values())

    # the access token, the refresh token and the password stop working
    assert (await client.get("/api/v1/users/me", headers=bob.headers)).status == 401
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": bob.refresh_token})
    refreshed = await error_of(response, 401)
    refused = await client.post(LOGIN, json={"username": "bob", "password": PASSWORD})
    wrong = await client.post(LOGIN, json={"username": "carol", "password": "wrong password"})
    assert refreshed == (await error_of(refused, 401)) == (await error_of(wrong, 401))
    db: Database = client.app[keys.DB]
    _, password_hash = await db.get_credentials("bob")  # type: ignore[misc]
    # a login that checked the password before the deactivation committed gets no session
    assert await db.create_session(bob.id, password_hash, "jti", "racing login") is None
    # a DM or room created as the deactivation commits is not created (no 500)
    with pytest.raises(AccountDeactivated):
        await db.get_or_create_dm(carol.id, bob.id)
    with pytest.raises(AccountDeactivated):
        await db.create_room("public", "racing", "", bob.id)
    # nobody adds them to a room or opens a DM with them
    response = await client.post(
        f"/api/v1/rooms/{general['id']}/members", json={"user_id": bob.id}, headers=carol.headers
    )
    assert (await error_of(response, 404))["code"] == "not_found"
    response = await client.post("/api/v1/dm", json={"user_id": bob.id}, headers=carol.headers)
    await error_of(response, 404)
    # deactivating again changes nothing
    assert (await _patch(client, alice, bob.id, deactivated=True)).status == 200

    response = await _patch(client, alice, bob.id, deactivated=False)
    assert (await response.json())["deactivated"] is False
    response = await client.post(LOGIN, json={"username": "bob", "password": PASSWORD})
    assert response.status == 200
    token = (await response.json())["access_token"]
    rooms = await client.get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"})
    assert (await rooms.json())["items"] == []  # the account is back, not its rooms
    entries = await _audit(client, alice)
    assert [e["action"] for e in entries] == ["user.reactivate", "user.deactivate"]
    assert entries[1]["details"] == {"sessions": 1, "rooms": 2, "bots": 0}
    await carol_ws.close()


async def test_erase_tombstones_every_message_in_batches(client, alice, bob, monkeypatch):
    monkeypatch.setattr(jobs, "ERASE_BATCH", 3)
    await _make_admin(client, alice)
    await client.patch(
        "/api/v1/users/me", json={"display_name": "Bobby B", "bio": "hi"}, headers=bob.headers
    )
    rooms = [await create_room(client, alice, name) for name in ("one", "two")]
    sent = []
    for room in rooms:
        await join(client, bob, room)
        sent += [(room, await send(client, bob, room, f"bob {n}")) for n in range(4)]
    kept = await send(client, alice, rooms[0], "alice stays")
    alice_ws = await connect(client, alice)

    response = await client.post(f"{USERS}/{bob.id}/erase", headers=alice.headers)
    assert response.status == 202
    erased = await response.json()
    assert erased["deactivated"] is True and erased["display_name"] == "bob"
    assert erased["bio"] == "" and erased["avatar_media_id"] is None

    deleted = set()
    while len(deleted) < len(sent):
        frame = await next_of(alice_ws, "message.deleted")
        assert frame["message"]["deleted"] is True and frame["message"]["body"] == ""
        deleted.add(frame["message"]["id"])
    assert deleted == {message["id"] for _, message in sent}
    for room in rooms:
        history = await (await client.get(messages_path(room), headers=alice.headers)).json()
        for message in history["items"]:
            assert message["deleted"] is (message["sender_id"] == bob.id)
    assert kept["deleted"] is False
    db: Database = client.app[keys.DB]
    job = await db.engine.fetchrow("SELECT state, done_count, finished_at FROM jobs")
    while job["state"] != "done":  # the last (empty) batch commits after the last event
        await asyncio.sleep(0.05)
        job = await db.engine.fetchrow("SELECT state, done_count, finished_at FROM jobs")
    assert job["done_count"] == len(sent) and job["finished_at"] is not None
    [entry, *_] = await _audit(client, alice)
    assert entry["action"] == "user.erase" and entry["target_id"] == bob.id
    await alice_ws.close()


async def test_an_erase_queued_before_start_is_carried_out(aiohttp_client, config):
    """A job row left by a node that died (its lease over) is done by the next app to start."""
    db = await Database.open(config.resolved_database_url)
    try:
        user = await db.create_user("mallory", "Mallory", "x")
        room = await db.create_room("public", "room", "", user.id)
        for n in range(5):
            await db.send_message(room.id, user.id, f"m{n}", None, None, [])
        await db.engine.execute(
            "INSERT INTO jobs (kind, target_id, lease_until, created_at)"
            " VALUES ('erase', $1, $2, $2)",
            user.id,
            now_ms() - 1,
        )
    finally:
        await db.close()
    client = await aiohttp_client(create_app(config))
    db = client.app[keys.DB]
    for _ in range(200):
        if await db.engine.fetchval("SELECT state FROM jobs") == "done":
            break
        await asyncio.sleep(0.05)
    assert await db.engine.fetchval("SELECT state FROM jobs") == "done"
    assert await db.undeleted_count(user.id) == 0
    events = await db.engine.fetchval(
        "SELECT count(*) FROM room_events WHERE type = 'message.deleted'"
    )
    assert events == 5


async def test_an_expired_lease_passes_to_the_next_claim(client, alice):
    db: Database = client.app[keys.DB]
    room = await create_room(client, alice)
    for n in range(3):
        await send(client, alice, room, f"m{n}")
    await db.engine.execute(
        "INSERT INTO jobs (kind, target_id, created_at, lease_until) VALUES ('erase', $1, 0, $2)",
        alice.id,
        now_ms() + 3_600_000,  # claimed by a node, as far as this app's worker knows
    )
    now = now_ms()
    assert await db.claim_job(now, 1000) is None  # leased
    first = await db.claim_job(now + 3_600_001, 1000)  # the lease is over
    assert first is not None
    assert await db.claim_job(now + 3_600_001, 1000) is None  # held now
    second = await db.claim_job(first.lease_until + 1, 1000)  # the first holder died
    assert second is not None and second.id == first.id
    assert await db.erase_batch(first, 1000, 2) is None  # the first cannot work it any more
    assert await db.undeleted_count(alice.id) == 3
    batch = await db.erase_batch(second, 1000, 2)
    assert batch is not None and len(batch.deleted) == 2 and not batch.done
    assert await db.engine.fetchval("SELECT done_count FROM jobs") == 2


async def test_audit_pages_newest_first(client, alice, bob):
    await _make_admin(client, alice)
    for _ in range(3):
        await _patch(client, alice, bob.id, is_admin=True)
        await _patch(client, alice, bob.id, is_admin=False)
    ids, actions, cursor = [], [], None
    while True:
        query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(AUDIT + query, headers=alice.headers)
        body = await response.json()
        ids += [e["id"] for e in body["items"]]
        actions += [e["action"] for e in body["items"]]
        for entry in body["items"]:
            assert entry["target_type"] == "user" and entry["ip"] and entry["at"].endswith("Z")
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    assert actions == ["user.demote", "user.promote"] * 3


async def test_a_deactivation_racing_a_ban_of_the_same_user_never_fails(client, alice, bob):
    """Both lock the users' rows they need in one id-ordered statement: neither
    waits for the other in a cycle (PostgreSQL would abort one with a 500)."""
    await _make_admin(client, alice)
    carol = await signup(client, "carol")
    await _make_admin(client, carol)
    for _ in range(10):
        target = await signup(client, f"t{secrets.token_hex(3)}")
        room = await create_room(client, carol, f"r{secrets.token_hex(3)}")
        await join(client, target, room)
        # The banning admin's id is above the target's, the deactivating one's below.
        moderator = await signup(client, f"m{secrets.token_hex(3)}")
        await _make_admin(client, moderator)
        deactivation, ban = await asyncio.gather(
            _patch(client, alice, target.id, deactivated=True),
            client.post(
                f"/api/v1/rooms/{room['id']}/bans",
                json={"user_id": target.id},
                headers=moderator.headers,
            ),
        )
        assert deactivation.status == 200, await deactivation.text()
        assert ban.status in (201, 404), await ban.text()  # 404: no longer anyone to ban
