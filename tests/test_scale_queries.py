"""Queries that must not grow with data they do not return, on both engines:
kept member counts, search paging, and batched reads (API.md behaviour unchanged)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from chat_server import keys

from .helpers import ROOMS, Account, create_room, join, signup
from .helpers.integrations import make_bot
from .helpers.moderation import make_admin

API = "/api/v1"


async def assert_member_counts_exact(client: TestClient) -> None:
    """Every room's `member_count` column equals its member rows, and the API says so."""
    rows = await client.app[keys.DB].engine.fetch(
        "SELECT r.id, r.member_count, (SELECT count(*) FROM members mb"
        " WHERE mb.room_id = r.id) AS real_count FROM rooms r ORDER BY r.id"
    )
    assert rows, "no rooms"
    assert [(r["id"], r["member_count"]) for r in rows] == [
        (r["id"], r["real_count"]) for r in rows
    ]


async def room_seen_by(client: TestClient, account: Account, room_id: int) -> dict[str, Any]:
    response = await client.get(f"{ROOMS}/{room_id}", headers=account.headers)
    assert response.status == 200
    return await response.json()


async def test_member_count_follows_every_membership_change(client, alice, bob):
    carol = await signup(client, "carol")
    dave = await signup(client, "dave")
    await make_admin(client, alice)
    room = await create_room(client, alice, name="counted")
    other = await create_room(client, bob, name="bobs")
    await assert_member_counts_exact(client)
    dm = await client.post(f"{API}/dm", json={"user_id": bob.id}, headers=alice.headers)
    assert dm.status in (200, 201)
    await assert_member_counts_exact(client)

    await join(client, bob, room)  # join
    await join(client, carol, other)
    added = await client.post(
        f"{ROOMS}/{room['id']}/members", json={"user_id": carol.id}, headers=alice.headers
    )
    assert added.status in (200, 201)  # add
    await join(client, dave, room)
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, bob, room["id"]))["member_count"] == 4

    left = await client.post(f"{ROOMS}/{room['id']}/leave", headers=dave.headers)
    assert left.status == 204  # leave
    await assert_member_counts_exact(client)
    kicked = await client.delete(f"{ROOMS}/{room['id']}/members/{carol.id}", headers=alice.headers)
    assert kicked.status == 204  # kick
    await assert_member_counts_exact(client)
    banned = await client.post(
        f"{ROOMS}/{room['id']}/bans", json={"user_id": bob.id}, headers=alice.headers
    )
    assert banned.status == 201  # ban
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, alice, room["id"]))["member_count"] == 1

    bot = await make_bot(client, carol)
    await client.app[keys.DB].add_member(other["id"], bot.id, "member", None)
    await assert_member_counts_exact(client)
    gone = await client.delete(f"{API}/bots/{bot.id}", headers=carol.headers)
    assert gone.status == 204  # a bot's deletion is its deactivation
    await assert_member_counts_exact(client)
    deactivated = await client.patch(
        f"{API}/admin/users/{carol.id}", json={"deactivated": True}, headers=alice.headers
    )
    assert deactivated.status == 200  # deactivation
    await assert_member_counts_exact(client)
    erased = await client.post(f"{API}/admin/users/{bob.id}/erase", headers=alice.headers)
    assert erased.status == 202  # erasure (bob was in his room and the DM)
    await assert_member_counts_exact(client)
    assert (await room_seen_by(client, alice, other["id"]))["member_count"] == 0

    deleted = await client.delete(f"{ROOMS}/{room['id']}", headers=alice.headers)
    assert deleted.status == 204  # room deletion
    await assert_member_counts_exact(client)
    listed = await (await client.get(ROOMS, headers=alice.headers)).json()
    assert [(r["kind"], r["member_count"]) for r in listed["items"]] == [("dm", 1)]
