"""REST calls for reactions and pins (API.md "Conversation"), shared by their tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .ws import page_events

ROOMS = "/api/v1/rooms"


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
