"""The embedding API: subscribe to committed events, post as a user."""

from __future__ import annotations

import pytest
from aiohttp import web

from chat_server import ApiError, create_app, post_message, subscribe

from .helpers import create_room, signup
from .helpers.ws import connect, next_of


async def test_bot_posts_and_subscribers_see_committed_events(aiohttp_client, config):
    app = create_app(config)
    seen: list[dict] = []
    unsubscribe = []

    async def on_startup(app):
        unsubscribe.append(subscribe(app, seen.append))

    app.on_startup.append(on_startup)
    client = await aiohttp_client(app)
    alice = await signup(client, "alice")
    bot = await signup(client, "helper_bot")
    room = await create_room(client, alice)
    await client.post(f"/api/v1/rooms/{room['id']}/join", headers=bot.headers)
    ws = await connect(client, alice)
    message = await post_message(app, bot.id, room["id"], "beep", client_id="b-1")
    assert message["seq"] == 1 and message["sender_id"] == bot.id
    assert (await next_of(ws, "message.new"))["message"] == message
    again = await post_message(app, bot.id, room["id"], "beep beep", client_id="b-1")
    assert again == message
    assert [e["message"]["id"] for e in seen if e["type"] == "message.new"] == [message["id"]]
    assert any(e["type"] == "member.joined" for e in seen)
    with pytest.raises(ApiError) as error:
        await post_message(app, bot.id, room["id"], "   ")
    assert error.value.code == "invalid_request"
    private = await create_room(client, alice, name="private", kind="private")
    with pytest.raises(ApiError) as error:
        await post_message(app, bot.id, private["id"], "hello?")
    assert error.value.code == "not_found"
    unsubscribe[0]()
    await post_message(app, bot.id, room["id"], "unseen")
    assert len([e for e in seen if e["type"] == "message.new"]) == 1


async def test_mounted_under_a_prefix_in_another_app(aiohttp_client, config):
    parent = web.Application()
    parent.add_subapp("/chat/", create_app(config))
    client = await aiohttp_client(parent)
    response = await client.post(
        "/chat/api/v1/auth/signup", json={"username": "alice", "password": "password123"}
    )
    assert response.status == 201
    token = (await response.json())["access_token"]
    me = await client.get("/chat/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json())["username"] == "alice"
    ws = await client.ws_connect("/chat/api/v1/ws", headers={"Authorization": f"Bearer {token}"})
    assert (await next_of(ws, "ready"))["user"]["username"] == "alice"
    await ws.close()
