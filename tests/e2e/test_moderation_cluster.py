"""Moderation across two server processes on one PostgreSQL and a throwaway Redis:
a ban on one node removes the member's sockets on the other at the ban's `pos`, a
role change reaches the member's sockets on the other, and a report reaches an
admin connected to the other node (API.md "Registration and server
administration"; DESIGN.md invariant 3)."""

from __future__ import annotations

import asyncpg
import pytest

from ..helpers import Account
from ..helpers.cluster import Cluster, Node
from ..helpers.ws import next_of, receive

pytestmark = pytest.mark.e2e


async def post(node: Node, account: Account, room_id: int, body: str) -> dict:
    status, message = await node.call(
        "POST", f"/api/v1/rooms/{room_id}/messages", account.access_token, json={"body": body}
    )
    assert status == 201, message
    return message


async def make_admin(database_url: str, account: Account) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET is_admin = TRUE WHERE id = $1", account.id)
    finally:
        await conn.close()


async def test_a_ban_on_one_node_removes_the_member_on_the_other(cluster: Cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    carol = await cluster.signup(two, "carol")
    room_id = await cluster.room(alice)
    await cluster.join(two, bob, room_id)
    await cluster.join(two, carol, room_id)
    victim = await cluster.listen(two, bob, "bob on two")
    witness = await cluster.listen(two, carol, "carol on two")
    before = await post(one, alice, room_id, "before")
    await victim.wait_for(lambda r: r.has_message(before["id"]), what="live")

    status, ban = await one.call(
        "POST", f"/api/v1/rooms/{room_id}/bans", alice.access_token, json={"user_id": bob.id}
    )
    assert status == 201, ban
    await victim.wait_for(
        lambda r: r.has("room.removed") and r.has("member.left", room_id=room_id),
        what="told of the ban",
    )
    after = [await post(node, alice, room_id, "after the ban") for node in (one, two)]
    await witness.wait_for(lambda r: r.has_message(after[-1]["id"]), what="given the last")
    await victim.live()
    left = victim.events[room_id][-1]
    assert left["type"] == "member.left" and left["user"]["id"] == bob.id
    assert left["reason"] == "banned"
    assert "after the ban" not in victim.text()
    victim.assert_clean()
    witness.assert_clean()
    status, refused = await two.call("POST", f"/api/v1/rooms/{room_id}/join", bob.access_token)
    assert status == 403, refused


async def test_a_role_change_on_one_node_reaches_members_on_the_other(cluster: Cluster):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(two, "bob")
    room_id = await cluster.room(alice)
    await cluster.join(two, bob, room_id)
    promoted = await cluster.listen(two, bob, "bob on two")

    status, member = await one.call(
        "PATCH",
        f"/api/v1/rooms/{room_id}/members/{bob.id}",
        alice.access_token,
        json={"role": "admin"},
    )
    assert status == 200 and member["role"] == "admin", member
    pos = await cluster.last_pos(alice, room_id)
    await promoted.wait_for(
        lambda r: r.has("member.role", room_id=room_id, pos=pos, role="admin"),
        what="told of the promotion",
    )
    assert promoted.events[room_id][-1]["user"]["id"] == bob.id
    promoted.assert_clean()
    status, renamed = await two.call(
        "PATCH", f"/api/v1/rooms/{room_id}", bob.access_token, json={"topic": "by bob"}
    )
    assert status == 200, renamed


async def test_a_report_reaches_an_admin_on_the_other_node(cluster: Cluster, cluster_db: str):
    one, two = cluster.one, cluster.two
    alice, bob = await cluster.signup(one, "alice"), await cluster.signup(one, "bob")
    carol = await cluster.signup(two, "carol")
    await make_admin(cluster_db, carol)
    room_id = await cluster.room(alice)
    message = await post(one, alice, room_id, "buy cheap watches")
    admin_ws = await two.ws(carol.access_token)
    bystander_ws = await two.ws(alice.access_token)
    try:
        status, filed = await one.call(
            "POST",
            f"/api/v1/rooms/{room_id}/messages/{message['id']}/report",
            bob.access_token,
            json={"reason": "spam"},
        )
        assert status == 201, filed
        report = (await next_of(admin_ws, "report.new"))["report"]
        assert report["id"] == filed["id"] and report["message"]["id"] == message["id"]
        assert report["reporter"]["id"] == bob.id and report["state"] == "open"
        # Only admins hear of it: alice's next frame on node two is her own room's.
        later = await post(one, alice, room_id, "later")
        frame = await receive(bystander_ws)
        while frame["type"] != "message.new":
            assert frame["type"] != "report.new", frame
            frame = await receive(bystander_ws)
        assert frame["message"]["id"] == later["id"]
    finally:
        await admin_ws.close()
        await bystander_ws.close()
