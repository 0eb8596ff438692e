"""Administration across processes: a deactivation on one node applies on the other at once."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import WSMsgType

from ..helpers import PASSWORD

pytestmark = pytest.mark.e2e


async def test_deactivation_on_one_node_closes_and_refuses_on_the_other(cluster, cluster_db):
    one, two = cluster.one, cluster.two
    alice = await cluster.signup(one, "alice")
    bob = await cluster.signup(two, "bob")
    carol = await cluster.signup(two, "carol")
    connection = await asyncpg.connect(cluster_db)
    try:
        await connection.execute("UPDATE users SET is_admin = TRUE WHERE id = $1", alice.id)
    finally:
        await connection.close()
    room_id = await cluster.room(carol)
    await cluster.join(two, bob, room_id)
    bob_ws = await two.ws(bob.access_token)
    carol_listens = await cluster.listen(two, carol, "carol")

    status, body = await one.call(
        "PATCH", f"/api/v1/admin/users/{bob.id}", alice.access_token, json={"deactivated": True}
    )
    assert status == 200 and body["deactivated"] is True

    closing = await bob_ws.receive(timeout=5)
    while closing.type == WSMsgType.TEXT:  # frames queued before the close
        closing = await bob_ws.receive(timeout=5)
    assert closing.type == WSMsgType.CLOSE and closing.data == 1008
    status, body = await two.call("GET", "/api/v1/users/me", bob.access_token)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = await two.call(
        "POST", "/api/v1/auth/login", json={"username": "bob", "password": PASSWORD}
    )
    assert status == 401
    await carol_listens.wait_for(
        lambda r: r.has("member.left", room_id=room_id, reason="deactivated"),
        what="bob's member.left",
    )
    carol_listens.assert_clean()
