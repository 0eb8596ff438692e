"""PUT /rooms/{id}/notify: levels and mutes, `Room.notify`, and the `notify` frame."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .helpers import Account, create_room, error_of, join
from .helpers.ws import assert_silent, connect, next_of


def notify_path(room: dict) -> str:
    return f"/api/v1/rooms/{room['id']}/notify"


async def put_notify(client: TestClient, account: Account, room: dict, **body: Any):
    return await client.put(notify_path(room), json=body, headers=account.headers)


async def room_as(client: TestClient, account: Account, room: dict) -> dict:
    response = await client.get(f"/api/v1/rooms/{room['id']}", headers=account.headers)
    assert response.status == 200
    return await response.json()


async def test_defaults_all_in_dms_mentions_elsewhere_null_for_outsiders(client, alice, bob):
    room = await create_room(client, alice, "general")
    assert room["notify"] == {"level": "mentions", "muted_until": None}
    response = await client.post("/api/v1/dm", json={"user_id": bob.id}, headers=alice.headers)
    dm = await response.json()
    assert dm["notify"] == {"level": "all", "muted_until": None}
    assert (await room_as(client, bob, room))["notify"] is None  # public, not joined
    listed = await (await client.get("/api/v1/rooms", headers=bob.headers)).json()
    assert [(r["id"], r["notify"]["level"]) for r in listed["items"]] == [(dm["id"], "all")]


async def test_levels_and_mutes_are_set_and_shown_everywhere(client, alice, bob):
    room = await create_room(client, alice, "general")
    await join(client, bob, room)
    response = await put_notify(
        client, bob, room, level="none", muted_until="2030-06-01T12:00:00+02:00"
    )
    assert response.status == 200
    settings = {"level": "none", "muted_until": "2030-06-01T10:00:00.000Z"}
    assert await response.json() == settings
    assert (await room_as(client, bob, room))["notify"] == settings
    listed = await (await client.get("/api/v1/rooms", headers=bob.headers)).json()
    assert listed["items"][0]["notify"] == settings
    # Another member's settings are theirs alone.
    assert (await room_as(client, alice, room))["notify"]["level"] == "mentions"
    # A PUT replaces both: no muted_until unmutes.
    response = await put_notify(client, bob, room, level="all")
    assert await response.json() == {"level": "all", "muted_until": None}
    response = await put_notify(client, bob, room, level="mentions", muted_until=None)
    assert await response.json() == {"level": "mentions", "muted_until": None}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2030-01-01t00:00:00z", "2030-01-01T00:00:00.000Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.000Z"),  # a leap second
        ("1960-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
        ("0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59-14:00", "9999-01-01T00:00:00.000Z"),
    ],
)
async def test_any_rfc3339_time_is_taken(client, alice, given, stored):
    room = await create_room(client, alice, "general")
    response = await put_notify(client, alice, room, level="all", muted_until=given)
    assert response.status == 200
    assert (await response.json())["muted_until"] == stored


async def test_leaving_forgets_the_settings(client, alice, bob):
    room = await create_room(client, alice, "general")
    await join(client, bob, room)
    assert (await put_notify(client, bob, room, level="none")).status == 200
    response = await client.post(f"/api/v1/rooms/{room['id']}/leave", headers=bob.headers)
    assert response.status == 204
    await join(client, bob, room)
    assert (await room_as(client, bob, room))["notify"]["level"] == "mentions"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "level"),
        ({"level": "loud"}, "level"),
        ({"level": None}, "level"),
        ({"level": "all", "muted_until": "tomorrow"}, "muted_until"),
        ({"level": "all", "muted_until": "2030-01-01T00:00:00"}, "muted_until"),  # no offset
        ({"level": "all", "muted_until": 1893456000}, "muted_until"),
        ({"level": "all", "muted_until": "2030-01-01"}, "muted_until"),
        ({"level": "all", "muted_until": "2030-01-01 00:00:00Z"}, "muted_until"),
        ({"level": "all", "muted_until": "2030-13-01T00:00:00Z"}, "muted_until"),
    ],
)
async def test_bad_settings_name_the_field(client, alice, body, field):
    room = await create_room(client, alice, "general")
    error = await error_of(await put_notify(client, alice, room, **body), 400)
    assert set(error["details"]["fields"]) == {field}


async def test_only_members_set_levels(client, alice, bob):
    public = await create_room(client, alice, "general")
    private = await create_room(client, alice, "secret", kind="private")
    await error_of(await put_notify(client, bob, public, level="all"), 403)
    await error_of(await put_notify(client, bob, private, level="all"), 404)
    await error_of(await put_notify(client, bob, {"id": 999999}, level="all"), 404)


async def test_a_change_reaches_every_connection_of_the_user_only(client, alice, bob):
    room = await create_room(client, alice, "general")
    await join(client, bob, room)
    phone, laptop = await connect(client, bob), await connect(client, bob)
    other = await connect(client, alice)
    response = await put_notify(client, bob, room, level="all", muted_until="2030-01-01T00:00:00Z")
    assert response.status == 200
    expected = {
        "type": "notify",
        "room_id": room["id"],
        "level": "all",
        "muted_until": "2030-01-01T00:00:00.000Z",
    }
    assert await next_of(phone, "notify") == expected
    assert await next_of(laptop, "notify") == expected
    await assert_silent(other, "notify")
    for ws in (phone, laptop, other):
        await ws.close()
