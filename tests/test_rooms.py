"""Rooms and membership (API.md "Rooms and membership") on both engines."""

from __future__ import annotations

import pytest

from chat_server import keys
from chat_server.db import AccountDeactivated

from .helpers import ROOMS, create_room, error_of, signup


async def test_create_list_get_and_patch(client, alice, bob):
    room = await create_room(client, alice, name="  General  ", topic="chat")
    assert room["name"] == "General" and room["topic"] == "chat" and room["kind"] == "public"
    assert room["my_role"] == "owner" and room["member_count"] == 1
    assert room["last_seq"] == 0 and room["unread_count"] == 0
    assert room["created_by"] == alice.id
    mine = await (await client.get(ROOMS, headers=alice.headers)).json()
    assert [r["id"] for r in mine["items"]] == [room["id"]] and mine["next_cursor"] is None
    seen_by_bob = await (await client.get(f"{ROOMS}/{room['id']}", headers=bob.headers)).json()
    assert seen_by_bob["my_role"] is None and seen_by_bob["my_last_read_seq"] == 0
    patched = await client.patch(
        f"{ROOMS}/{room['id']}", json={"topic": "new topic"}, headers=alice.headers
    )
    assert (await patched.json())["topic"] == "new topic"
    await error_of(
        await client.patch(f"{ROOMS}/{room['id']}", json={"name": "x"}, headers=bob.headers), 403
    )


async def test_create_room_rejects_bad_fields(client, alice):
    for payload, fields in [
        ({}, {"name", "kind"}),
        ({"name": "   ", "kind": "public"}, {"name"}),
        ({"name": "n" * 81, "kind": "public"}, {"name"}),
        ({"name": "ok", "kind": "dm"}, {"kind"}),
        ({"name": "ok", "kind": "public", "topic": 5}, {"topic"}),
        ({"name": ["x"], "kind": ["public"]}, {"name", "kind"}),
    ]:
        error = await error_of(await client.post(ROOMS, json=payload, headers=alice.headers), 400)
        assert set(error["details"]["fields"]) == fields, payload


async def test_private_rooms_are_invisible_to_outsiders(client, alice, bob):
    room = await create_room(client, alice, name="secret", kind="private")
    path = f"{ROOMS}/{room['id']}"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"name": "x"}),
        ("POST", f"{path}/join", None),
        ("POST", f"{path}/leave", None),
        ("GET", f"{path}/members", None),
        ("POST", f"{path}/members", {"user_id": bob.id}),
        ("GET", f"{path}/messages", None),
        ("POST", f"{path}/messages", {"body": "hi"}),
        ("POST", f"{path}/read", {"seq": 1}),
    ]:
        response = await client.request(method, url, json=body, headers=bob.headers)
        assert (await error_of(response, 404))["code"] == "not_found", (method, url)
    public = await (await client.get(f"{ROOMS}/public", headers=bob.headers)).json()
    assert public["items"] == []


async def test_join_leave_and_public_listing(client, alice, bob):
    room = await create_room(client, alice, name="Lobby")
    await create_room(client, alice, name="secret", kind="private")
    listed = await (await client.get(f"{ROOMS}/public?q=lob", headers=bob.headers)).json()
    assert [r["name"] for r in listed["items"]] == ["Lobby"]
    joined = await client.post(f"{ROOMS}/{room['id']}/join", headers=bob.headers)
    assert (await joined.json())["my_role"] == "member"
    again = await client.post(f"{ROOMS}/{room['id']}/join", headers=bob.headers)
    assert again.status == 200 and (await again.json())["member_count"] == 2
    assert (await client.post(f"{ROOMS}/{room['id']}/leave", headers=bob.headers)).status == 204
    mine = await (await client.get(ROOMS, headers=bob.headers)).json()
    assert mine["items"] == []


async def test_public_rooms_page_with_cursor(client, alice):
    ids = [(await create_room(client, alice, name=f"room {i}"))["id"] for i in range(5)]
    first = await (await client.get(f"{ROOMS}/public?limit=3", headers=alice.headers)).json()
    assert [r["id"] for r in first["items"]] == ids[:3]
    second = await client.get(
        f"{ROOMS}/public?limit=3&cursor={first['next_cursor']}", headers=alice.headers
    )
    second = await second.json()
    assert [r["id"] for r in second["items"]] == ids[3:] and second["next_cursor"] is None


async def test_roles_add_and_kick(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice, name="team", kind="private")
    members = f"{ROOMS}/{room['id']}/members"
    added = await client.post(
        members, json={"user_id": bob.id, "role": "admin"}, headers=alice.headers
    )
    assert added.status == 201
    assert (await added.json())["role"] == "admin"
    await error_of(await client.post(members, json={"user_id": bob.id}, headers=alice.headers), 409)
    await error_of(await client.post(members, json={"user_id": 9999}, headers=alice.headers), 404)
    # An admin may add members (admins too: tests/test_member_roles.py), a member may
    # not, and nobody kicks the owner.
    assert (
        await client.post(members, json={"user_id": carol.id}, headers=bob.headers)
    ).status == 201
    dave = await signup(client, "dave")
    await error_of(
        await client.post(members, json={"user_id": dave.id}, headers=carol.headers), 403
    )
    await error_of(await client.delete(f"{members}/{alice.id}", headers=bob.headers), 403)
    await error_of(await client.delete(f"{members}/{bob.id}", headers=carol.headers), 403)
    listed = await (await client.get(members, headers=carol.headers)).json()
    assert {m["user"]["username"]: m["role"] for m in listed["items"]} == {
        "alice": "owner",
        "bob": "admin",
        "carol": "member",
    }
    assert (await client.delete(f"{members}/{carol.id}", headers=bob.headers)).status == 204
    # Kicked: the private room is gone for carol at once.
    await error_of(await client.get(f"{ROOMS}/{room['id']}", headers=carol.headers), 404)
    await error_of(await client.delete(f"{members}/{carol.id}", headers=bob.headers), 404)


async def test_dm_is_created_once(client, alice, bob):
    first = await client.post("/api/v1/dm", json={"user_id": bob.id}, headers=alice.headers)
    assert first.status == 201
    room = await first.json()
    assert room["kind"] == "dm" and room["name"] == "" and room["topic"] == ""
    again = await client.post("/api/v1/dm", json={"user_id": alice.id}, headers=bob.headers)
    assert again.status == 200 and (await again.json())["id"] == room["id"]
    carol = await signup(client, "carol")
    await error_of(await client.get(f"{ROOMS}/{room['id']}", headers=carol.headers), 404)
    await error_of(await client.post(f"{ROOMS}/{room['id']}/join", headers=carol.headers), 404)
    await error_of(
        await client.post("/api/v1/dm", json={"user_id": alice.id}, headers=alice.headers), 400
    )
    await error_of(
        await client.post("/api/v1/dm", json={"user_id": 999}, headers=alice.headers), 404
    )
    await error_of(
        await client.post(
            f"{ROOMS}/{room['id']}/members", json={"user_id": carol.id}, headers=alice.headers
        ),
        403,
    )


async def test_an_account_deactivated_since_the_check_is_not_already_a_member(client, alice, bob):
    """The racy order of an add (or a join) whose user lookup passed before the
    account's deactivation committed: the database refuses it as deactivated
    (the add's 404, the join's 401), not as "already a member" (409)."""
    db = client.app[keys.DB]
    room = await create_room(client, alice)
    await db.engine.write("UPDATE users SET deactivated_at = 1 WHERE id = $1", bob.id)
    for actor_id in (alice.id, None):  # an add by alice, bob's own join
        with pytest.raises(AccountDeactivated):
            await db.add_member(room["id"], bob.id, "member", actor_id)
    with pytest.raises(AccountDeactivated):
        await db.add_member(room["id"], 9999, "member", alice.id)
    assert await db.get_member(room["id"], bob.id) is None
