"""Bot accounts: made by users, acting through their token, listed and deleted."""

from __future__ import annotations

from aiohttp import WSCloseCode

from chat_server import ApiError, ensure_bot, join_room, keys

from .helpers import PASSWORD, create_room, error_of, send
from .helpers.integrations import BOTS, TOKENS, closed, make_bot
from .helpers.ws import connect, next_of

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"


async def _make_admin(client, account) -> None:
    await client.app[keys.DB].engine.execute(
        "UPDATE users SET is_admin = TRUE WHERE id = $1", account.id
    )


async def test_a_bot_acts_through_its_token(client, alice):
    bot = await make_bot(client, alice, "Deploy_Bot")
    assert bot.user["username"] == "deploy_bot" and bot.user["is_bot"] is True
    assert bot.access_token.startswith("chat_pat_")
    me = await (await client.get(ME, headers=bot.headers)).json()
    assert me["id"] == bot.id and me["is_bot"] is True
    room = await create_room(client, alice)
    added = await client.post(
        f"/api/v1/rooms/{room['id']}/members", json={"user_id": bot.id}, headers=alice.headers
    )
    assert added.status == 201
    posted = await send(client, bot, room, "build green")
    assert posted["sender_id"] == bot.id


async def test_a_bot_cannot_log_in_with_a_password(client, alice):
    bot = await make_bot(client, alice)
    wrong = await client.post(LOGIN, json={"username": "nobody_here", "password": PASSWORD})
    expected = await error_of(wrong, 401)
    for password in (PASSWORD, "!", ""):
        response = await client.post(
            LOGIN, json={"username": bot.user["username"], "password": password or "x"}
        )
        assert await error_of(response, 401) == expected


async def test_bots_cannot_make_bots_invites_or_tokens(client, alice):
    bot = await make_bot(client, alice)
    await error_of(await client.post(BOTS, json={"username": "child"}, headers=bot.headers), 403)
    await error_of(await client.post("/api/v1/invites", json={}, headers=bot.headers), 403)
    await error_of(await client.post(TOKENS, json={"name": "more"}, headers=bot.headers), 403)


async def test_limits_and_names(client, alice, bob):
    for i in range(10):
        await make_bot(client, alice, f"bot{i}")
    over = await client.post(BOTS, json={"username": "bot10"}, headers=alice.headers)
    await error_of(over, 409)
    taken = await client.post(BOTS, json={"username": "alice"}, headers=bob.headers)
    assert (await error_of(taken, 409))["details"]["fields"] == {"username": "taken"}
    bad = await client.post(BOTS, json={"username": "a b"}, headers=bob.headers)
    assert set((await error_of(bad, 400))["details"]["fields"]) == {"username"}


async def test_listed_by_owner_and_admins(client, alice, bob):
    mine = await make_bot(client, alice, "alices_bot")
    theirs = await make_bot(client, bob, "bobs_bot")
    listed = await (await client.get(BOTS, headers=alice.headers)).json()
    assert [b["id"] for b in listed["items"]] == [mine.id] and listed["next_cursor"] is None
    await _make_admin(client, alice)
    listed = await (await client.get(BOTS, headers=alice.headers)).json()
    assert [b["id"] for b in listed["items"]] == [mine.id, theirs.id]


async def test_deleting_a_bot_deactivates_it(client, alice, bob):
    bot = await make_bot(client, alice)
    room = await create_room(client, alice)
    await client.post(
        f"/api/v1/rooms/{room['id']}/members", json={"user_id": bot.id}, headers=alice.headers
    )
    bot_ws = await connect(client, bot)
    watcher = await connect(client, alice)
    await error_of(await client.delete(f"{BOTS}/{bot.id}", headers=bob.headers), 404)
    assert (await client.delete(f"{BOTS}/{bot.id}", headers=alice.headers)).status == 204
    assert await closed(bot_ws) == WSCloseCode.POLICY_VIOLATION
    left = await next_of(watcher, "member.left")
    assert left["user"]["id"] == bot.id and left["reason"] == "deactivated"
    await error_of(await client.get(ME, headers=bot.headers), 401)
    assert (await (await client.get(BOTS, headers=alice.headers)).json())["items"] == []
    await error_of(await client.delete(f"{BOTS}/{bot.id}", headers=alice.headers), 404)
    # Someone else's bot: an admin may delete it, audited.
    other = await make_bot(client, bob, "other_bot")
    await _make_admin(client, alice)
    assert (await client.delete(f"{BOTS}/{other.id}", headers=alice.headers)).status == 204
    audit = await (await client.get("/api/v1/admin/audit", headers=alice.headers)).json()
    deleted = [e for e in audit["items"] if e["action"] == "bot.delete"]
    assert [(e["actor_id"], e["target_id"]) for e in deleted] == [
        (alice.id, other.id),
        (alice.id, bot.id),
    ]
    # People are not bots: /bots/{id} does not deactivate them.
    await error_of(await client.delete(f"{BOTS}/{bob.id}", headers=alice.headers), 404)


async def test_embedders_find_their_bot_by_name(client, alice):
    app = client.app
    first = await ensure_bot(app, "Helper_Bot", display_name="Helper")
    again = await ensure_bot(app, "helper_bot")
    assert first["id"] == again["id"] and first["is_bot"] and first["display_name"] == "Helper"
    try:
        await ensure_bot(app, "alice")
    except ApiError as error:
        assert error.status == 409
    else:
        raise AssertionError("a person's account was taken for a bot")
    room = await create_room(client, alice)
    joined = await join_room(app, first["id"], room["id"])
    assert joined["my_role"] == "member"
    private = await create_room(client, alice, "secret", kind="private")
    try:
        await join_room(app, first["id"], private["id"])
    except ApiError as error:
        assert error.status == 404
    else:
        raise AssertionError("joined a private room")


async def test_an_owners_deactivation_ends_its_bots(client, alice, bob):
    """A deactivated owner's bots stop with it: the tokens it was shown must not
    outlive it (nor its webhooks, whose bots are its own)."""
    await _make_admin(client, alice)
    bot = await make_bot(client, bob, "bobs_helper")
    room = await create_room(client, alice)
    added = await client.post(
        f"/api/v1/rooms/{room['id']}/members", json={"user_id": bot.id}, headers=alice.headers
    )
    assert added.status == 201
    bot_ws = await connect(client, bot)
    watcher = await connect(client, alice)
    response = await client.patch(
        f"/api/v1/admin/users/{bob.id}", json={"deactivated": True}, headers=alice.headers
    )
    assert response.status == 200
    assert await closed(bot_ws) == WSCloseCode.POLICY_VIOLATION
    left = await next_of(watcher, "member.left")
    assert (left["user"]["id"], left["reason"]) == (bot.id, "deactivated")
    await error_of(await client.get(ME, headers=bot.headers), 401)
    audit = await (await client.get("/api/v1/admin/audit", headers=alice.headers)).json()
    assert audit["items"][0]["details"]["bots"] == 1
    await watcher.close()


async def test_a_bot_cannot_be_made_an_admin(client, alice):
    await _make_admin(client, alice)
    bot = await make_bot(client, alice)
    response = await client.patch(
        f"/api/v1/admin/users/{bot.id}", json={"is_admin": True}, headers=alice.headers
    )
    await error_of(response, 409)
    await error_of(await client.get("/api/v1/admin/users", headers=bot.headers), 403)
