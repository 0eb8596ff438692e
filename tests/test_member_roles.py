"""Changing a member's role (`PATCH /rooms/{id}/members/{user_id}`) on both engines:
who may, the `member.role` room event, its audit entry, and the check under the lock."""

from __future__ import annotations

import asyncio

from .helpers import ROOMS, create_room, error_of, join, signup
from .helpers.moderation import audit_actions, make_admin
from .helpers.ws import assert_silent, connect, next_of


def member_path(room, account):
    return f"{ROOMS}/{room['id']}/members/{account.id}"


async def set_role(client, actor, room, target, role):
    return await client.patch(member_path(room, target), json={"role": role}, headers=actor.headers)


async def add(client, actor, room, target, role="member"):
    response = await client.post(
        f"{ROOMS}/{room['id']}/members",
        json={"user_id": target.id, "role": role},
        headers=actor.headers,
    )
    assert response.status == 201, await response.text()


async def room_events(client, account, room):
    response = await client.get(f"{ROOMS}/{room['id']}/events", headers=account.headers)
    assert response.status == 200
    return (await response.json())["items"]


async def test_the_owner_promotes_and_demotes_as_room_events(client, alice, bob):
    room = await create_room(client, alice, kind="private")
    await add(client, alice, room, bob)  # pos 2
    alice_ws, bob_ws = await connect(client, alice), await connect(client, bob)

    response = await set_role(client, alice, room, bob, "admin")
    assert response.status == 200
    member = await response.json()
    assert member["user"]["id"] == bob.id and member["role"] == "admin"
    assert set(member) == {"user", "role", "joined_at"}
    for ws in (alice_ws, bob_ws):
        event = await next_of(ws, "member.role")
        assert (event["room_id"], event["pos"], event["role"]) == (room["id"], 3, "admin")
        assert event["user"]["id"] == bob.id
    seen_by_bob = await (await client.get(f"{ROOMS}/{room['id']}", headers=bob.headers)).json()
    assert seen_by_bob["my_role"] == "admin" and seen_by_bob["last_pos"] == 3
    # Bob manages the room now.
    renamed = await client.patch(f"{ROOMS}/{room['id']}", json={"topic": "t"}, headers=bob.headers)
    assert renamed.status == 200

    # The same role again: 200, nothing new.
    again = await set_role(client, alice, room, bob, "admin")
    assert again.status == 200 and (await again.json())["role"] == "admin"
    await assert_silent(bob_ws, "member.role")

    assert (await set_role(client, alice, room, bob, "member")).status == 200
    assert (await next_of(bob_ws, "member.role"))["role"] == "member"
    roles = [
        (e["pos"], e["user"]["id"], e["role"])
        for e in await room_events(client, bob, room)
        if e["type"] == "member.role"
    ]
    assert roles == [(3, bob.id, "admin"), (5, bob.id, "member")]  # 4: room.updated
    await error_of(
        await client.patch(f"{ROOMS}/{room['id']}", json={"topic": "x"}, headers=bob.headers), 403
    )
    assert await audit_actions(client) == [("member.role", bob.id), ("member.role", bob.id)]
    await alice_ws.close()
    await bob_ws.close()


async def test_who_may_change_whose_role(client, alice, bob):
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    room = await create_room(client, alice)
    for user in (bob, carol, dave):
        await join(client, user, room)

    # A member changes nobody's role, their own included.
    for target, role in ((carol, "admin"), (bob, "admin"), (alice, "member")):
        await error_of(await set_role(client, bob, room, target, role), 403)
    # The owner makes bob an admin; an admin makes members admins ...
    assert (await set_role(client, alice, room, bob, "admin")).status == 200
    assert (await set_role(client, bob, room, carol, "admin")).status == 200
    # ... and may add admins directly, but not demote another admin or touch the owner.
    await error_of(await set_role(client, bob, room, carol, "member"), 403)
    for role in ("admin", "member"):
        refused = await error_of(await set_role(client, bob, room, alice, role), 403)
        assert "owner" in refused["message"]
    # Nobody changes the owner's role, the owner included.
    await error_of(await set_role(client, alice, room, alice, "member"), 403)
    # An admin may step down; the owner demotes an admin.
    assert (await set_role(client, carol, room, carol, "member")).status == 200
    assert (await set_role(client, alice, room, bob, "member")).status == 200

    # Who is not a member: 404 for the target, 403 for a caller outside a public room.
    erin = await signup(client, "erin")
    not_member = await error_of(await set_role(client, alice, room, erin, "admin"), 404)
    assert not_member["code"] == "not_found"
    missing = await client.patch(
        f"{ROOMS}/{room['id']}/members/999999", json={"role": "admin"}, headers=alice.headers
    )
    await error_of(missing, 404)
    await error_of(await set_role(client, erin, room, dave, "admin"), 403)
    # A private room is invisible to outsiders; a server admin acts as its owner.
    private = await create_room(client, alice, name="secret", kind="private")
    await add(client, alice, private, bob, role="admin")
    await error_of(await set_role(client, erin, private, bob, "member"), 404)
    await make_admin(client, erin)
    assert (await set_role(client, erin, private, bob, "member")).status == 200
    # A DM has no roles.
    dm = await client.post("/api/v1/dm", json={"user_id": bob.id}, headers=alice.headers)
    await error_of(await set_role(client, alice, await dm.json(), bob, "admin"), 403)

    members = await (await client.get(f"{ROOMS}/{room['id']}/members", headers=dave.headers)).json()
    assert {m["user"]["username"]: m["role"] for m in members["items"]} == {
        "alice": "owner",
        "bob": "member",
        "carol": "member",
        "dave": "member",
    }
    assert [action for action, _ in await audit_actions(client)] == ["member.role"] * 5


async def test_a_bad_role_is_a_400_naming_role(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    for body in ({}, {"role": "owner"}, {"role": 1}, {"role": None}):
        response = await client.patch(member_path(room, bob), json=body, headers=alice.headers)
        error = await error_of(response, 400)
        assert error["code"] == "invalid_request" and set(error["details"]["fields"]) == {"role"}
    bad_user = await client.patch(
        f"{ROOMS}/{room['id']}/members/abc", json={"role": "admin"}, headers=alice.headers
    )
    await error_of(bad_user, 404)
    assert await audit_actions(client) == []


async def test_a_demotion_racing_the_admins_promotion_never_lets_it_land_after(client, alice, bob):
    """The admin's promotion of carol either commits before their demotion (lower
    pos) or is refused: the check reads bob's role under the lock the demotion takes."""
    carol = await signup(client, "carol")
    for round_ in range(6):
        room = await create_room(client, alice, name=f"race {round_}")
        await add(client, alice, room, bob, role="admin")
        await join(client, carol, room)
        promoted, demoted = await asyncio.gather(
            set_role(client, bob, room, carol, "admin"),
            set_role(client, alice, room, bob, "member"),
        )
        assert demoted.status == 200, await demoted.text()
        assert promoted.status in (200, 403), await promoted.text()
        roles = {
            e["user"]["id"]: e["pos"]
            for e in await room_events(client, alice, room)
            if e["type"] == "member.role"
        }
        if promoted.status == 200:
            assert roles[carol.id] < roles[bob.id]
        else:
            assert carol.id not in roles
