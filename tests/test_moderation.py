"""Moderation (API.md "Registration and server administration"): bans, room deletion,
server admins moderating any room, reports and their audit entries, on both engines."""

from __future__ import annotations

import asyncio

import pytest

from chat_server import keys
from chat_server.db import Refused
from chat_server.models import Actor

from .helpers import ROOMS, create_room, error_of, join, messages_path, send, signup
from .helpers.moderation import audit_actions, make_admin
from .helpers.ws import assert_silent, connect, next_of


def bans_path(room):
    return f"{ROOMS}/{room['id']}/bans"


async def ban(client, moderator, room, user, **extra):
    return await client.post(
        bans_path(room), json={"user_id": user.id, **extra}, headers=moderator.headers
    )


async def add(client, moderator, room, user, role="member"):
    return await client.post(
        f"{ROOMS}/{room['id']}/members",
        json={"user_id": user.id, "role": role},
        headers=moderator.headers,
    )


async def member_ids(client, account, room):
    response = await client.get(f"{ROOMS}/{room['id']}/members", headers=account.headers)
    assert response.status == 200
    return {m["user"]["id"] for m in (await response.json())["items"]}


# --- bans ------------------------------------------------------------------------------


async def test_a_ban_removes_the_member_and_refuses_them_until_lifted(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    bob_ws = await connect(client, bob)

    response = await ban(client, alice, room, bob, reason="  spam  ")
    assert response.status == 201, await response.text()
    banned = await response.json()
    assert banned["user"]["id"] == bob.id and banned["reason"] == "spam"
    assert banned["by"] == alice.id and banned["created_at"].endswith("Z")
    left = await next_of(bob_ws, "member.left")
    assert left["user"]["id"] == bob.id and left["reason"] == "banned"
    assert (await next_of(bob_ws, "room.removed"))["room"]["id"] == room["id"]
    await send(client, alice, room, "after the ban")
    await assert_silent(bob_ws, "message.new")
    assert await member_ids(client, alice, room) == {alice.id}

    join_again = await client.post(f"{ROOMS}/{room['id']}/join", headers=bob.headers)
    assert (await error_of(join_again, 403))["code"] == "forbidden"
    await error_of(await add(client, alice, room, bob), 403)
    await error_of(await ban(client, alice, room, bob), 409)
    listed = await (await client.get(bans_path(room), headers=alice.headers)).json()
    assert [b["user"]["id"] for b in listed["items"]] == [bob.id]
    assert listed["next_cursor"] is None

    unban = await client.delete(f"{bans_path(room)}/{bob.id}", headers=alice.headers)
    assert unban.status == 204
    await error_of(await client.delete(f"{bans_path(room)}/{bob.id}", headers=alice.headers), 404)
    await join(client, bob, room)
    assert await member_ids(client, alice, room) == {alice.id, bob.id}
    assert await audit_actions(client) == [("member.ban", bob.id), ("member.unban", bob.id)]
    await bob_ws.close()


async def test_bans_need_a_manager_who_outranks_the_user(client, alice, bob):
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    room = await create_room(client, alice)
    await join(client, bob, room)
    assert (await add(client, alice, room, carol, role="admin")).status == 201
    for moderator, user in [(bob, dave), (carol, alice), (carol, carol), (alice, alice)]:
        await error_of(await ban(client, moderator, room, user), 403)
    await error_of(await client.get(bans_path(room), headers=bob.headers), 403)
    await error_of(await client.delete(f"{bans_path(room)}/{dave.id}", headers=bob.headers), 403)
    await error_of(await ban(client, alice, room, bob, reason="r" * 1001), 400)
    unknown = await client.post(bans_path(room), json={"user_id": 10**9}, headers=alice.headers)
    await error_of(unknown, 404)
    assert await audit_actions(client) == []

    # A room admin may ban a member; a ban of someone outside the room keeps them out.
    assert (await ban(client, carol, room, bob)).status == 201
    assert (await ban(client, carol, room, dave)).status == 201
    await error_of(await client.post(f"{ROOMS}/{room['id']}/join", headers=dave.headers), 403)
    private = await create_room(client, alice, name="hidden", kind="private")
    await error_of(await ban(client, bob, private, dave), 404)


async def test_a_join_racing_a_ban_never_ends_a_member_with_a_ban(client, alice, bob):
    room = await create_room(client, alice)
    join_path = f"{ROOMS}/{room['id']}/join"
    outcomes = set()
    for _ in range(8):
        joined, banned = await asyncio.gather(
            client.post(join_path, headers=bob.headers), ban(client, alice, room, bob)
        )
        assert banned.status == 201, await banned.text()
        assert joined.status in (200, 403), await joined.text()
        outcomes.add(joined.status)
        assert await member_ids(client, alice, room) == {alice.id}
        listed = await (await client.get(bans_path(room), headers=alice.headers)).json()
        assert [b["user"]["id"] for b in listed["items"]] == [bob.id]
        lifted = await client.delete(f"{bans_path(room)}/{bob.id}", headers=alice.headers)
        assert lifted.status == 204
    # The stream agrees: every join of bob's is followed by his removal.
    events = await (await client.get(f"{ROOMS}/{room['id']}/events", headers=alice.headers)).json()
    bob_events = [e for e in events["items"] if e.get("user", {}).get("id") == bob.id]
    for joined_event, left in zip(bob_events[::2], bob_events[1::2], strict=True):
        assert joined_event["type"] == "member.joined"
        assert left["type"] == "member.left" and left["reason"] == "banned"


async def test_adds_and_kicks_check_the_moderator_as_the_change_commits(client, alice, bob):
    """The racy order of an add or kick whose route checked the caller before the
    caller lost the right (banned, kicked, demoted in the room or on the server):
    the database refuses it."""
    db = client.app[keys.DB]
    carol = await signup(client, "carol")  # bob's second account
    dave = await signup(client, "dave")
    erin = await signup(client, "erin")
    room = await create_room(client, alice, name="secret", kind="private")
    for user in (bob, dave, erin):
        assert (await add(client, alice, room, user, role="admin")).status == 201
    owner = Actor(alice.id, "")

    assert await db.ban_member(room["id"], bob.id, "", owner) is not None
    with pytest.raises(Refused):  # banned bob's add, past its check, commits after the ban
        await db.add_member(room["id"], carol.id, "member", bob.id)
    assert await db.kick_member(room["id"], dave.id, owner) is not None
    with pytest.raises(Refused):  # kicked dave's kick of erin
        await db.kick_member(room["id"], erin.id, Actor(dave.id, ""))
    assert await db.set_member_role(room["id"], erin.id, "member", owner) == ("admin", 7)
    with pytest.raises(Refused):  # demoted erin's add
        await db.add_member(room["id"], carol.id, "member", erin.id)

    frank = await signup(client, "frank")  # a server admin, demoted meanwhile
    await make_admin(client, frank)
    await db.engine.write("UPDATE users SET is_admin = FALSE WHERE id = $1", frank.id)
    with pytest.raises(Refused):
        await db.kick_member(room["id"], erin.id, Actor(frank.id, ""))

    assert await member_ids(client, alice, room) == {alice.id, erin.id}
    assert await audit_actions(client) == [
        ("member.ban", bob.id),
        ("member.kick", dave.id),
        ("member.role", erin.id),
    ]


async def test_adds_and_kicks_racing_a_ban_of_the_moderator(client, alice, bob):
    """Whichever commits first, the banned admin's add or kick never outlives the
    ban: it committed before the ban, or it is refused (403) after it."""
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    for round_ in range(6):
        room = await create_room(client, alice, name=f"race {round_}", kind="private")
        for user, role in ((bob, "admin"), (dave, "member")):
            assert (await add(client, alice, room, user, role=role)).status == 201
        kick = client.delete(f"{ROOMS}/{room['id']}/members/{dave.id}", headers=bob.headers)
        added, kicked, banned = await asyncio.gather(
            add(client, bob, room, carol), kick, ban(client, alice, room, bob)
        )
        assert banned.status == 201, await banned.text()
        assert added.status in (201, 403, 404), await added.text()
        assert kicked.status in (204, 403, 404), await kicked.text()
        path = f"{ROOMS}/{room['id']}/events"
        events = (await (await client.get(path, headers=alice.headers)).json())["items"]
        ban_pos = next(e["pos"] for e in events if e.get("reason") == "banned")
        by_bob = [e for e in events if e["pos"] > 3 and e["user"]["id"] in (carol.id, dave.id)]
        assert all(e["pos"] < ban_pos for e in by_bob), events


# --- server admins ----------------------------------------------------------------------


async def test_a_server_admin_moderates_a_private_room_without_reading_it(client, alice, bob):
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    await make_admin(client, carol)
    room = await create_room(client, alice, name="secret", kind="private")
    for user in (bob, dave):
        assert (await add(client, alice, room, user)).status == 201
    message = await send(client, bob, room, "rude")
    path = f"{ROOMS}/{room['id']}"

    for reading in (messages_path(room), f"{path}/events", path, f"{path}/members"):
        await error_of(await client.get(reading, headers=carol.headers), 404)
    deleted = await client.delete(f"{messages_path(room)}/{message['id']}", headers=carol.headers)
    assert deleted.status == 204
    history = await (await client.get(messages_path(room), headers=alice.headers)).json()
    assert history["items"][0]["deleted"] is True
    kicked = await client.delete(f"{path}/members/{bob.id}", headers=carol.headers)
    assert kicked.status == 204
    assert (await ban(client, carol, room, dave)).status == 201
    await error_of(await client.delete(f"{path}/members/{alice.id}", headers=carol.headers), 403)
    assert await member_ids(client, alice, room) == {alice.id}
    assert (await client.delete(path, headers=carol.headers)).status == 204
    await error_of(await client.get(path, headers=alice.headers), 404)
    assert await audit_actions(client) == [
        ("message.delete", message["id"]),
        ("member.kick", bob.id),
        ("member.ban", dave.id),
        ("room.delete", room["id"]),
    ]


async def test_only_actions_on_others_are_audited_and_failures_never(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    own = await send(client, alice, room, "mine")
    theirs = await send(client, bob, room, "theirs")
    messages = messages_path(room)
    members = f"{ROOMS}/{room['id']}/members"
    assert (await client.delete(f"{messages}/{own['id']}", headers=alice.headers)).status == 204
    kept = await send(client, alice, room, "kept")
    await error_of(await client.delete(f"{messages}/{kept['id']}", headers=bob.headers), 403)
    await error_of(await client.delete(f"{members}/{alice.id}", headers=bob.headers), 403)
    await error_of(await client.delete(f"{ROOMS}/{room['id']}", headers=bob.headers), 403)
    assert await audit_actions(client) == []
    assert (await client.delete(f"{messages}/{theirs['id']}", headers=alice.headers)).status == 204
    assert (await client.delete(f"{members}/{bob.id}", headers=alice.headers)).status == 204
    assert await audit_actions(client) == [
        ("message.delete", theirs["id"]),
        ("member.kick", bob.id),
    ]


# --- room deletion ----------------------------------------------------------------------


async def test_the_owner_deletes_a_room_and_it_is_gone_everywhere(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice, name="doomed")
    assert (await add(client, alice, room, bob, role="admin")).status == 201
    await join(client, carol, room)
    message = await send(client, carol, room, "last words")
    path = f"{ROOMS}/{room['id']}"
    await error_of(await client.delete(path, headers=bob.headers), 403)  # a room admin
    await error_of(await client.delete(path, headers=carol.headers), 403)
    assert await audit_actions(client) == []
    sockets = {account.id: await connect(client, account) for account in (alice, bob, carol)}

    assert (await client.delete(path, headers=alice.headers)).status == 204
    for user_id, ws in sockets.items():
        left = await next_of(ws, "member.left")
        while left["user"]["id"] != user_id:  # others' removals come first
            assert left["reason"] == "room_deleted"
            left = await next_of(ws, "member.left")
        assert left["reason"] == "room_deleted"
        assert (await next_of(ws, "room.removed"))["room"]["id"] == room["id"]
        await ws.close()
    for account in (alice, bob, carol):
        await error_of(await client.get(path, headers=account.headers), 404)
        mine = await (await client.get(ROOMS, headers=account.headers)).json()
        assert mine["items"] == []
    public = await (await client.get(f"{ROOMS}/public", headers=carol.headers)).json()
    assert public["items"] == []
    for method, url, body in [
        ("POST", f"{path}/join", None),
        ("POST", messages_path(room), {"body": "hello?"}),
        ("GET", messages_path(room), None),
        ("POST", f"{messages_path(room)}/{message['id']}/report", {"reason": "spam"}),
        ("POST", bans_path(room), {"user_id": carol.id}),
        ("DELETE", path, None),
    ]:
        response = await client.request(method, url, json=body, headers=alice.headers)
        await error_of(response, 404)
    assert await audit_actions(client) == [("room.delete", room["id"])]


async def test_a_join_racing_a_room_deletion_never_leaves_a_member(client, alice, bob):
    db = client.app[keys.DB]
    for round_ in range(8):
        room = await create_room(client, alice, name=f"race {round_}")
        path = f"{ROOMS}/{room['id']}"
        joined, deleted = await asyncio.gather(
            client.post(f"{path}/join", headers=bob.headers),
            client.delete(path, headers=alice.headers),
        )
        assert deleted.status == 204, await deleted.text()
        assert joined.status in (200, 404), await joined.text()
        members = await db.engine.fetchval(
            "SELECT count(*) FROM members WHERE room_id = $1", room["id"]
        )
        assert members == 0
    mine = await (await client.get(ROOMS, headers=bob.headers)).json()
    assert mine["items"] == []


# --- reports ----------------------------------------------------------------------------


async def test_reports_reach_the_admins_and_are_decided(client, alice, bob):
    carol = await signup(client, "carol")
    await make_admin(client, carol)
    room = await create_room(client, alice)
    message = await send(client, alice, room, "buy cheap watches")
    report_path = f"{messages_path(room)}/{message['id']}/report"
    admin_ws = await connect(client, carol)

    bad = await client.post(report_path, json={"reason": "boring"}, headers=bob.headers)
    assert set((await error_of(bad, 400))["details"]["fields"]) == {"reason"}
    too_long = {"reason": "spam", "comment": "c" * 1001}
    await error_of(await client.post(report_path, json=too_long, headers=bob.headers), 400)
    filed = await client.post(
        report_path, json={"reason": "spam", "comment": "ads"}, headers=bob.headers
    )
    assert filed.status == 201
    report_id = (await filed.json())["id"]
    again = await client.post(report_path, json={"reason": "other"}, headers=bob.headers)
    await error_of(again, 409)

    pushed = (await next_of(admin_ws, "report.new"))["report"]
    assert pushed["id"] == report_id and pushed["state"] == "open"
    assert pushed["reason"] == "spam" and pushed["comment"] == "ads"
    assert pushed["reporter"]["id"] == bob.id and pushed["message"]["body"] == "buy cheap watches"
    assert pushed["room"] == {"id": room["id"], "name": room["name"], "kind": "public"}
    assert pushed["resolved_by"] is None
    await admin_ws.close()

    reports = "/api/v1/admin/reports"
    for path in (reports, f"{reports}?state=open"):
        listed = await (await client.get(path, headers=carol.headers)).json()
        assert listed == {"items": [pushed], "next_cursor": None}
    await error_of(await client.get(reports, headers=bob.headers), 403)
    await error_of(await client.get(f"{reports}?state=lost", headers=carol.headers), 400)
    decision = f"{reports}/{report_id}"
    await error_of(
        await client.patch(decision, json={"state": "resolved"}, headers=bob.headers), 403
    )
    await error_of(await client.patch(decision, json={"state": "open"}, headers=carol.headers), 400)
    assert await audit_actions(client) == []
    resolved = await client.patch(decision, json={"state": "resolved"}, headers=carol.headers)
    assert resolved.status == 200
    assert (await resolved.json()) == pushed | {"state": "resolved", "resolved_by": carol.id}
    await error_of(
        await client.patch(decision, json={"state": "dismissed"}, headers=carol.headers), 409
    )
    await error_of(
        await client.patch(f"{reports}/999999", json={"state": "dismissed"}, headers=carol.headers),
        404,
    )
    open_now = await (await client.get(f"{reports}?state=open", headers=carol.headers)).json()
    assert open_now["items"] == []
    done = await (await client.get(f"{reports}?state=resolved", headers=carol.headers)).json()
    assert [r["id"] for r in done["items"]] == [report_id]
    assert await audit_actions(client) == [("report.resolve", report_id)]


async def test_a_report_needs_a_message_the_reporter_can_read(client, alice, bob):
    private = await create_room(client, alice, name="secret", kind="private")
    hidden = await send(client, alice, private, "hidden")
    outside = await client.post(
        f"{messages_path(private)}/{hidden['id']}/report",
        json={"reason": "abuse"},
        headers=bob.headers,
    )
    await error_of(outside, 404)
    room = await create_room(client, alice)
    gone = await send(client, alice, room, "gone")
    assert (
        await client.delete(f"{messages_path(room)}/{gone['id']}", headers=alice.headers)
    ).status == 204
    for message_id in (gone["id"], hidden["id"], 10**9):  # deleted, another room's, none
        response = await client.post(
            f"{messages_path(room)}/{message_id}/report",
            json={"reason": "other"},
            headers=bob.headers,
        )
        await error_of(response, 404)
    assert await client.app[keys.DB].reports_page("open", 2**63 - 1, 10) == []
