"""REST and WebSocket calls the conversation tests share (API.md "Conversation"):
reactions, pins, threads and mentions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from . import ROOMS, Account, messages_path
from .ws import Recorder, connect, page_events


def reaction_path(room_id: int, message_id: int, emoji: str) -> str:
    return f"{ROOMS}/{room_id}/messages/{message_id}/reactions/{quote(emoji, safe='')}"


async def react(client, account, message: dict[str, Any], emoji: str, *, status: int = 200):
    """PUT the reaction; returns the body (asserting `status`)."""
    response = await client.put(
        reaction_path(message["room_id"], message["id"], emoji), headers=account.headers
    )
    body = await response.json()
    assert response.status == status, body
    return body


async def unreact(client, account, message: dict[str, Any], emoji: str, *, status: int = 200):
    response = await client.delete(
        reaction_path(message["room_id"], message["id"], emoji), headers=account.headers
    )
    body = await response.json()
    assert response.status == status, body
    return body


async def reactors(client, account, message: dict[str, Any], emoji: str) -> list[int]:
    """The ids of everyone who reacted with `emoji`, every page."""
    ids: list[int] = []
    path = reaction_path(message["room_id"], message["id"], emoji) + "?limit=2"
    cursor = None
    while True:
        response = await client.get(
            path + (f"&cursor={cursor}" if cursor else ""), headers=account.headers
        )
        assert response.status == 200, await response.text()
        body = await response.json()
        ids += [user["id"] for user in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


async def history(client, account, room_id: int, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"{ROOMS}/{room_id}/messages{query}", headers=account.headers)
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


async def pin(client, account, message: dict[str, Any], *, status: int = 200):
    response = await client.post(
        f"{ROOMS}/{message['room_id']}/pins",
        json={"message_id": message["id"]},
        headers=account.headers,
    )
    body = await response.json()
    assert response.status == status, body
    return body


async def unpin(client, account, message: dict[str, Any]) -> int:
    response = await client.delete(
        f"{ROOMS}/{message['room_id']}/pins/{message['id']}", headers=account.headers
    )
    return response.status


async def pins(client, account, room_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"{ROOMS}/{room_id}/pins", headers=account.headers)
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


async def room_events(client, account, room_id: int, after_pos: int = 0) -> list[dict[str, Any]]:
    """Every room event after `after_pos`, from `GET /rooms/{id}/events`."""

    async def fetch(path: str) -> dict[str, Any]:
        response = await client.get(path, headers=account.headers)
        assert response.status == 200, await response.text()
        return await response.json()

    return await page_events(fetch, room_id, after_pos)


def fold_reactions(events: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    """{(message_id, emoji): count} after the reaction events, as their counts say."""
    counts: dict[tuple[int, str], int] = {}
    for event in sorted(events, key=lambda e: e["pos"]):
        if event["type"] in ("reaction.added", "reaction.removed"):
            counts[(event["message_id"], event["emoji"])] = event["count"]
    return {key: count for key, count in counts.items() if count}


def message_path(message: dict[str, Any]) -> str:
    return f"{ROOMS}/{message['room_id']}/messages/{message['id']}"


async def get_json(client, account: Account, path: str) -> Any:
    response = await client.get(path, headers=account.headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def room_of(client, account: Account, room: dict[str, Any]) -> dict[str, Any]:
    """The room as `account` sees it now."""
    return await get_json(client, account, f"{ROOMS}/{room['id']}")


async def messages_by_id(
    client, account: Account, room: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """The room's newest (up to 100) messages as `account` reads them, by id."""
    page = await get_json(client, account, messages_path(room) + "?limit=100")
    return {m["id"]: m for m in page["items"]}


async def mark_read(client, account: Account, room: dict[str, Any], seq: int) -> None:
    response = await client.post(
        f"{ROOMS}/{room['id']}/read", json={"seq": seq}, headers=account.headers
    )
    assert response.status == 204, await response.text()


async def edit(client, account: Account, message: dict[str, Any], body: str) -> dict[str, Any]:
    response = await client.patch(
        message_path(message), json={"body": body}, headers=account.headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def delete(client, account: Account, message: dict[str, Any]) -> None:
    response = await client.delete(message_path(message), headers=account.headers)
    assert response.status == 204, await response.text()


async def leave(client, account: Account, room: dict[str, Any]) -> None:
    response = await client.post(f"{ROOMS}/{room['id']}/leave", headers=account.headers)
    assert response.status == 204, await response.text()


async def replayed_messages(
    client, account: Account, room: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """The messages of the `message.new` events a connection resuming the room from its
    start is sent (rebuilt from the rows as they are now), by id."""
    rooms = {room["id"]: 0}
    ws = await connect(client, account, via_frame=True, rooms=rooms)
    replay = Recorder(ws, account.id, rooms)
    await replay.wait_for(lambda r: r.of_type("resumed"), what="resumed")
    replay.assert_clean()
    await replay.close()
    return {
        e["message"]["id"]: e["message"]
        for e in replay.events.get(room["id"], [])
        if e["type"] == "message.new"
    }
