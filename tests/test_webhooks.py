"""Webhooks: incoming posts through the send path; outgoing deliveries, signed and retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from chat_server import create_app, keys

from .helpers import create_room, error_of, join, make_config, messages_path, send, signup
from .helpers.integrations import make_bot, make_webhook, webhooks_path
from .helpers.moderation import make_admin
from .helpers.ws import connect, next_of


def _hook_path(hook: dict[str, Any]) -> str:
    assert hook["hook_url"].endswith(f"/api/v1/hooks/{hook['secret']}")
    return f"/api/v1/hooks/{hook['secret']}"


# --- incoming -------------------------------------------------------------------------


async def test_incoming_hook_posts_as_its_bot(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    watcher = await connect(client, bob)
    hook = await make_webhook(client, alice, room, name="CI")
    assert hook["kind"] == "incoming" and hook["bot"]["is_bot"] and hook["url"] is None
    joined = await next_of(watcher, "member.joined")
    assert joined["user"]["id"] == hook["bot"]["id"]

    posted = await client.post(_hook_path(hook), json={"text": "build *green*"})
    assert posted.status == 201
    message = await posted.json()
    assert message["sender_id"] == hook["bot"]["id"] and message["body"] == "build *green*"
    assert (await next_of(watcher, "message.new"))["message"]["id"] == message["id"]

    again = await client.post(_hook_path(hook), json={"body": "deploy", "client_id": "d-1"})
    retried = await client.post(_hook_path(hook), json={"body": "deploy", "client_id": "d-1"})
    assert again.status == 201 and retried.status == 200
    assert (await again.json())["id"] == (await retried.json())["id"]


async def test_incoming_hook_refusals(aiohttp_client, tmp_path, database_url):
    client = await aiohttp_client(
        create_app(make_config(tmp_path, database_url, message_rate="10/60"))
    )
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await make_webhook(client, alice, room)
    path = _hook_path(hook)
    secret = hook["secret"]
    # Only the secret's hash is stored and looked up (its unique index): a guess
    # that shares a prefix with the secret is no closer than any other.
    stored = await client.app[keys.DB].engine.fetchval(
        "SELECT secret_sha256 FROM webhooks WHERE id = $1", hook["id"]
    )
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    near = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for wrong in (near, "x" * len(secret), "x" * 500):
        await error_of(await client.post(f"/api/v1/hooks/{wrong}", json={"text": "hi"}), 404)
    bad = await client.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
    await error_of(bad, 400)
    await error_of(await client.post(path, json={"text": ""}), 400)
    await error_of(await client.post(path, json={"text": "x" * 5000}), 400)
    huge = json.dumps({"text": "x" * (1024 * 1024 + 10)})
    big = await client.post(path, data=huge, headers={"Content-Type": "application/json"})
    await error_of(big, 413)
    statuses = [(await client.post(path, json={"text": f"n{i}"})).status for i in range(6)]
    assert 429 in statuses
    flooded = await client.post(path, json={"text": "more"})
    assert (await error_of(flooded, 429)) and flooded.headers["Retry-After"]


async def test_webhooks_are_managed_by_the_room_managers(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    await error_of(
        await client.post(
            webhooks_path(room), json={"name": "x", "kind": "incoming"}, headers=bob.headers
        ),
        403,
    )
    hook = await make_webhook(client, alice, room)
    seen_by_member = (await (await client.get(webhooks_path(room), headers=bob.headers)).json())[
        "items"
    ]
    assert seen_by_member[0]["secret"] is None and seen_by_member[0]["hook_url"] is None
    seen_by_owner = (await (await client.get(webhooks_path(room), headers=alice.headers)).json())[
        "items"
    ]
    assert seen_by_owner[0]["secret"] == hook["secret"]
    bad = await client.post(
        webhooks_path(room),
        json={"name": "x", "kind": "incoming", "url": "https://example.com"},
        headers=alice.headers,
    )
    assert set((await error_of(bad, 400))["details"]["fields"]) == {"url"}
    no_url = await client.post(
        webhooks_path(room), json={"name": "x", "kind": "outgoing"}, headers=alice.headers
    )
    assert set((await error_of(no_url, 400))["details"]["fields"]) == {"url"}
    path = f"{webhooks_path(room)}/{hook['id']}"
    await error_of(await client.delete(path, headers=bob.headers), 403)
    assert (await client.delete(path, headers=alice.headers)).status == 204
    await error_of(await client.post(_hook_path(hook), json={"text": "hi"}), 404)
    bot = await client.app[keys.DB].get_user(hook["bot"]["id"])
    assert bot is not None and bot.deactivated
    assert (await (await client.get(webhooks_path(room), headers=alice.headers)).json())[
        "items"
    ] == []


async def test_a_server_admin_outside_the_room_cannot_add_or_see_its_webhooks(client, alice, bob):
    """A hook reads the room: an admin moderates rooms without reading private ones."""
    await make_admin(client, bob)
    private = await create_room(client, alice, kind="private")
    public = await create_room(client, alice, kind="public")
    hook = await make_webhook(client, alice, private)
    outgoing = {"name": "spy", "kind": "outgoing", "url": "https://example.com/hook"}
    for room, status in ((private, 404), (public, 403)):
        made = await client.post(webhooks_path(room), json=outgoing, headers=bob.headers)
        await error_of(made, status)
        await error_of(await client.get(webhooks_path(room), headers=bob.headers), status)
    listed = await (await client.get(webhooks_path(private), headers=alice.headers)).json()
    assert [h["id"] for h in listed["items"]] == [hook["id"]]
    # Deleting stays moderation: the admin may remove a hook from any room.
    deleted = await client.delete(f"{webhooks_path(private)}/{hook['id']}", headers=bob.headers)
    assert deleted.status == 204


async def test_only_managers_see_an_outgoing_hooks_url(aiohttp_client, tmp_path, database_url):
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    room = await create_room(client, alice)
    await join(client, bob, room)
    url = "http://127.0.0.1:9/hook?token=receiver-credential"
    hook = await make_webhook(client, alice, room, kind="outgoing", url=url)
    assert hook["url"] == url
    seen_by_owner = await (await client.get(webhooks_path(room), headers=alice.headers)).json()
    assert seen_by_owner["items"][0]["url"] == url
    seen_by_member = await (await client.get(webhooks_path(room), headers=bob.headers)).json()
    [seen] = seen_by_member["items"]
    assert seen["url"] is None and seen["secret"] is None and seen["hook_url"] is None
    assert seen["kind"] == "outgoing" and seen["trigger"] == "all"


async def test_outgoing_url_must_be_public_without_outbound_private(client, alice):
    room = await create_room(client, alice)
    for url in ("http://127.0.0.1:9/hook", "ftp://example.com/x", "http://10.1.2.3/"):
        refused = await client.post(
            webhooks_path(room),
            json={"name": "out", "kind": "outgoing", "url": url},
            headers=alice.headers,
        )
        assert set((await error_of(refused, 400))["details"]["fields"]) == {"url"}


# --- outgoing, against a real local receiver -------------------------------------------

Behaviour = Callable[[int], web.StreamResponse | None]  # attempt number -> answer


class Receiver:
    """A local HTTP endpoint that checks each delivery's signature and records it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.secret = ""
        self.answer: Callable[[int], Any] = lambda n: web.json_response({})
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        call = {
            "headers": dict(request.headers),
            "body": json.loads(raw),
            "signed": hmac.compare_digest(request.headers["X-Chat-Signature"], expected),
            "at": time.monotonic(),
        }
        self.calls.append(call)
        async with self.arrived:
            self.arrived.notify_all()
        answer = self.answer(len(self.calls))
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer

    async def wait_for(self, count: int, timeout: float = 15) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.calls) >= count), timeout)


@pytest.fixture
async def receiver(aiohttp_server) -> tuple[Receiver, str]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return found, f"http://127.0.0.1:{server.port}/hook"


def _hook_config(tmp_path, database_url, **extra):
    return make_config(tmp_path, database_url, outbound_private=True, webhook_backoff=0.2, **extra)


async def _outgoing(client, alice, room, receiver, url, trigger="all") -> dict[str, Any]:
    hook = await make_webhook(client, alice, room, kind="outgoing", url=url, trigger=trigger)
    receiver.secret = hook["secret"]
    assert hook["hook_url"] is None and hook["trigger"] == trigger and hook["failures"] == 0
    return hook


async def _bot_messages(client, account, room, bot_id: int) -> list[dict[str, Any]]:
    history = await (await client.get(messages_path(room), headers=account.headers)).json()
    return [m for m in history["items"] if m["sender_id"] == bot_id]


async def test_outgoing_delivery_is_signed_and_its_reply_lands(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await _outgoing(client, alice, room, found, url)
    watcher = await connect(client, alice)
    found.answer = lambda n: web.json_response({"text": "pong"})
    sent = await send(client, alice, room, "ping")
    await found.wait_for(1)
    call = found.calls[0]
    assert call["signed"] and call["headers"]["X-Chat-Event"] == "message.new"
    uuid.UUID(call["headers"]["X-Chat-Delivery"])
    assert call["body"] == {
        "type": "message.new",
        "room_id": room["id"],
        "pos": call["body"]["pos"],
        "message": call["body"]["message"],
        "webhook_id": hook["id"],
    }
    assert call["body"]["message"]["id"] == sent["id"] and call["body"]["message"]["body"] == "ping"
    reply = None
    while reply is None or reply["sender_id"] != hook["bot"]["id"]:
        reply = (await next_of(watcher, "message.new"))["message"]
    assert reply["body"] == "pong"
    # The bot's own reply is not delivered back to it.
    await send(client, alice, room, "second")
    await found.wait_for(2)
    assert [c["body"]["message"]["body"] for c in found.calls] == ["ping", "second"]
    listed = (await (await client.get(webhooks_path(room), headers=alice.headers)).json())["items"]
    assert listed[0]["last_delivery_at"] is not None and listed[0]["failures"] == 0


async def test_fails_twice_then_succeeds_one_reply(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await _outgoing(client, alice, room, found, url)
    found.answer = lambda n: (
        web.json_response({"text": "done"}) if n >= 3 else web.Response(status=500)
    )
    await send(client, alice, room, "deploy")
    await found.wait_for(3)
    deliveries = {c["headers"]["X-Chat-Delivery"] for c in found.calls}
    assert len(deliveries) == 1 and all(c["signed"] for c in found.calls)
    db = client.app[keys.DB]
    for _ in range(100):
        if await db.delivery_states(hook["id"]) == [("done", 3)]:
            break
        await asyncio.sleep(0.05)
    assert await db.delivery_states(hook["id"]) == [("done", 3)]
    replies = await _bot_messages(client, alice, room, hook["bot"]["id"])
    assert [m["body"] for m in replies] == ["done"]
    assert len(found.calls) == 3


async def test_a_hanging_receiver_times_out_and_is_retried(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    client.app[keys.OUTBOUND].timeout = 0.5  # the 10 s limit, shortened for the test

    async def hang_first(n: int) -> web.StreamResponse:
        if n == 1:
            await asyncio.sleep(5)
        return web.json_response({})

    found.answer = hang_first
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await _outgoing(client, alice, room, found, url)
    await send(client, alice, room, "slow")
    await found.wait_for(2)
    assert (
        found.calls[0]["headers"]["X-Chat-Delivery"] == found.calls[1]["headers"]["X-Chat-Delivery"]
    )
    db = client.app[keys.DB]
    for _ in range(100):
        if await db.delivery_states(hook["id"]) == [("done", 2)]:
            break
        await asyncio.sleep(0.05)
    assert await db.delivery_states(hook["id"]) == [("done", 2)]
    # The first attempt was cut at the 0.5 s timeout (not the receiver's 5 s), then
    # retried after the 0.2 s back-off.
    gap = found.calls[1]["at"] - found.calls[0]["at"]
    assert 0.6 <= gap < 4, gap


async def test_mention_trigger(aiohttp_client, tmp_path, database_url, receiver):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await _outgoing(client, alice, room, found, url, trigger="mention")
    await send(client, alice, room, "nobody is named here")
    await send(client, alice, room, f"@{hook['bot']['username']} status?")
    await found.wait_for(1)
    await asyncio.sleep(0.5)  # a delivery of the first message would have come by now
    assert [c["body"]["message"]["body"] for c in found.calls] == [
        f"@{hook['bot']['username']} status?"
    ]


async def test_a_restart_between_attempts_delivers_once(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    config = make_config(tmp_path, database_url, outbound_private=True, webhook_backoff=2.0)
    first = await aiohttp_client(create_app(config))
    alice = await signup(first, "alice")
    room = await create_room(first, alice)
    hook = await _outgoing(first, alice, room, found, url)
    found.answer = lambda n: (
        web.Response(status=503) if n == 1 else web.json_response({"text": "after restart"})
    )
    await send(first, alice, room, "survive")
    await found.wait_for(1)
    db = first.app[keys.DB]
    for _ in range(100):  # the failed attempt is recorded: the retry is due in 2 s
        if await db.delivery_states(hook["id"]) == [("pending", 1)]:
            break
        await asyncio.sleep(0.02)
    assert await db.delivery_states(hook["id"]) == [("pending", 1)]
    await first.close()  # before the retry is due
    second = await aiohttp_client(create_app(config))
    await found.wait_for(2)
    db = second.app[keys.DB]
    for _ in range(100):
        if await db.delivery_states(hook["id"]) == [("done", 2)]:
            break
        await asyncio.sleep(0.05)
    assert await db.delivery_states(hook["id"]) == [("done", 2)]
    replies = await _bot_messages(second, alice, room, hook["bot"]["id"])
    assert [m["body"] for m in replies] == ["after restart"]
    assert len({c["headers"]["X-Chat-Delivery"] for c in found.calls}) == 1


async def test_a_delivery_that_always_fails_is_given_up_after_five_attempts(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    hook = await _outgoing(client, alice, room, found, url)
    found.answer = lambda n: web.Response(status=502)
    await send(client, alice, room, "nobody listens")
    await found.wait_for(5)  # 0.2 + 0.4 + 0.8 + 1.6 s of back-off
    db = client.app[keys.DB]
    for _ in range(100):
        if await db.delivery_states(hook["id"]) == [("failed", 5)]:
            break
        await asyncio.sleep(0.05)
    assert await db.delivery_states(hook["id"]) == [("failed", 5)]
    listed = (await (await client.get(webhooks_path(room), headers=alice.headers)).json())["items"]
    assert listed[0]["failures"] == 5 and listed[0]["last_delivery_at"] is not None
    assert len(found.calls) == 5
    assert len({c["headers"]["X-Chat-Delivery"] for c in found.calls}) == 1
    assert await _bot_messages(client, alice, room, hook["bot"]["id"]) == []


async def test_a_hook_whose_bot_was_removed_stops_and_resumes_without_the_backlog(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice, kind="private")
    hook = await _outgoing(client, alice, room, found, url)
    await send(client, alice, room, "before")
    await found.wait_for(1)
    member = f"/api/v1/rooms/{room['id']}/members"
    kicked = await client.delete(f"{member}/{hook['bot']['id']}", headers=alice.headers)
    assert kicked.status == 204
    await send(client, alice, room, "while the bot is out")
    await client.app[keys.WEBHOOKS].run_once()  # scanned while the bot is out
    readded = await client.post(member, json={"user_id": hook["bot"]["id"]}, headers=alice.headers)
    assert readded.status == 201, await readded.text()
    await send(client, alice, room, "after")
    await found.wait_for(2)
    db = client.app[keys.DB]
    for _ in range(100):
        if [state for state, _ in await db.delivery_states(hook["id"])] == ["done", "done"]:
            break
        await asyncio.sleep(0.05)
    assert [c["body"]["message"]["body"] for c in found.calls] == ["before", "after"]
    assert len(await db.delivery_states(hook["id"])) == 2


async def test_answers_trigger_no_hook_so_answering_hooks_cannot_loop(
    aiohttp_client, tmp_path, database_url, receiver
):
    found, url = receiver
    client = await aiohttp_client(create_app(_hook_config(tmp_path, database_url)))
    alice = await signup(client, "alice")
    room = await create_room(client, alice)
    first = await _outgoing(client, alice, room, found, url)
    second = await _outgoing(client, alice, room, found, url)
    found.answer = lambda n: web.json_response({"text": f"echo {n}"})
    await send(client, alice, room, "start")
    hook_bots = {first["bot"]["id"], second["bot"]["id"]}
    for _ in range(200):  # both hooks answer "start"
        history = await (await client.get(messages_path(room), headers=alice.headers)).json()
        if {m["sender_id"] for m in history["items"]} >= hook_bots:
            break
        await asyncio.sleep(0.05)
    assert {m["sender_id"] for m in history["items"]} >= hook_bots
    # Other bots' messages (an owned bot's here) are heard as anyone's.
    own_bot = await make_bot(client, alice)
    await join(client, own_bot, room)
    await send(client, own_bot, room, "a bot's message")
    await send(client, alice, room, "end")
    await found.wait_for(6)
    db = client.app[keys.DB]
    # "end" was scanned, so everything before it (the answers, the bot's message) was too.
    for hook in (first, second):
        assert len(await db.delivery_states(hook["id"])) == 3
    by_hook = sorted((c["body"]["webhook_id"], c["body"]["message"]["body"]) for c in found.calls)
    bodies = ("start", "a bot's message", "end")
    assert by_hook == sorted((hook["id"], body) for hook in (first, second) for body in bodies)


async def _states_become(client, hook: dict[str, Any], expected: list[tuple[str, int]]) -> None:
    db = client.app[keys.DB]
    for _ in range(500):
        if await db.delivery_states(hook["id"]) == expected:
            return
        await asyncio.sleep(0.02)
    assert await db.delivery_states(hook["id"]) == expected


async def test_a_retry_sends_the_message_as_it_is_now(
    aiohttp_client, tmp_path, database_url, receiver
):
    """Deleted before its retry: never sent again. Edited: the retry carries the edit."""
    found, url = receiver
    config = make_config(tmp_path, database_url, outbound_private=True, webhook_backoff=1.0)
    client = await aiohttp_client(create_app(config))
    alice = await signup(client, "alice")
    room = await create_room(client, alice, kind="private")
    hook = await _outgoing(client, alice, room, found, url)
    found.answer = lambda n: web.Response(status=500) if n in (1, 2) else web.json_response({})

    leaked = await send(client, alice, room, "oops: password hunter2")
    await found.wait_for(1)
    await _states_become(client, hook, [("pending", 1)])
    path = f"{messages_path(room)}/{leaked['id']}"
    assert (await client.delete(path, headers=alice.headers)).status == 204
    await _states_become(client, hook, [("skipped", 1)])  # the retry came due: nothing sent
    assert len(found.calls) == 1

    typo = await send(client, alice, room, "deploy to prod at 5")
    await found.wait_for(2)
    await _states_become(client, hook, [("skipped", 1), ("pending", 1)])
    edited = await client.patch(
        f"{messages_path(room)}/{typo['id']}",
        json={"body": "deploy to staging"},
        headers=alice.headers,
    )
    assert edited.status == 200
    await found.wait_for(3)
    first, retry = found.calls[1], found.calls[2]
    assert first["body"]["message"]["body"] == "deploy to prod at 5"
    assert retry["body"]["message"]["body"] == "deploy to staging"
    assert retry["body"]["message"]["edited_at"] is not None
    assert first["headers"]["X-Chat-Delivery"] == retry["headers"]["X-Chat-Delivery"]
    assert first["signed"] and retry["signed"]
