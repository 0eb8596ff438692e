"""REST and WebSocket calls the thread and mention tests share (API.md "Conversation")."""

from __future__ import annotations

from typing import Any

from . import ROOMS, Account, messages_path
from .ws import Recorder, connect


def message_path(message: dict[str, Any]) -> str:
    return f"{ROOMS}/{message['room_id']}/messages/{message['id']}"


async def get_json(client, account: Account, path: str) -> Any:
    response = await client.get(path, headers=account.headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def room_of(client, account: Account, room: dict[str, Any]) -> dict[str, Any]:
    """The room as `account` sees it now."""
    return await get_json(client, account, f"{ROOMS}/{room['id']}")


async def history(client, account: Account, room: dict[str, Any]) -> dict[int, dict[str, Any]]:
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
