"""Web Push end to end in one process: subscriptions, who a message notifies, and
real pushes to a receiver on 127.0.0.1 that checks the VAPID JWT and decrypts.

The server runs with outbound_private=True (the receiver is on loopback); the
refusals without it have tests of their own at the end.
"""

from __future__ import annotations

import asyncio
import re
import stat
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chat_server import Config, create_app, keys
from chat_server.config import ConfigError
from chat_server.vapid import Vapid, load_private_key

from .helpers import Account, create_room, error_of, join, make_config, send, signup
from .helpers.moderation import make_admin
from .helpers.push import SUBSCRIPTIONS, PushReceiver, Subscriber, b64url, push_receiver
from .helpers.ws import connect, next_of, receive
from .helpers.ws import send as send_frame


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    return make_config(tmp_path, database_url, outbound_private=True)


@pytest.fixture
async def receiver(client: TestClient) -> AsyncIterator[PushReceiver]:
    async with push_receiver() as receiver:
        info = await (await client.get("/api/v1/server")).json()
        receiver.server_key = info["vapid_public_key"]
        yield receiver


async def subscribe(client: TestClient, account: Account, subscriber: Subscriber) -> dict:
    response = await client.post(
        SUBSCRIPTIONS, json=subscriber.subscription, headers=account.headers
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def drained(client: TestClient) -> None:
    """Every push the server decided on so far has been sent (or given up)."""
    await asyncio.wait_for(client.app[keys.PUSHER].drained(), 30)


async def set_level(client: TestClient, account: Account, room: dict, **settings: Any) -> None:
    response = await client.put(
        f"/api/v1/rooms/{room['id']}/notify", json=settings, headers=account.headers
    )
    assert response.status == 200, await response.text()


async def open_dm(client: TestClient, account: Account, other: Account) -> dict:
    response = await client.post("/api/v1/dm", json={"user_id": other.id}, headers=account.headers)
    assert response.status in (200, 201)
    return await response.json()


def sent(client: TestClient) -> float:
    return client.app[keys.METRICS].pushes_sent._value.get()


# --- who is pushed -----------------------------------------------------------------------


async def test_an_offline_dm_member_gets_one_push_per_message(client, alice, bob, receiver):
    dm = await open_dm(client, alice, bob)
    await subscribe(client, bob, receiver.subscriber("bob"))
    await subscribe(client, alice, receiver.subscriber("alice"))  # the sender: never
    first = await send(client, alice, dm, "hello Bob")
    second = await send(client, alice, dm, "x" * 300)
    pushes = [await receiver.next_push(), await receiver.next_push()]
    await drained(client)
    assert [p.subscriber for p in pushes] == ["bob", "bob"]
    sender = {"id": alice.id, "display_name": "Alice"}
    by_seq = sorted((p.payload for p in pushes), key=lambda p: p["seq"])
    assert by_seq == [
        {
            "type": "message",
            "room_id": dm["id"],
            "seq": first["seq"],
            "room_name": "",
            "sender": sender,
            "body": "hello Bob",
        },
        {
            "type": "message",
            "room_id": dm["id"],
            "seq": second["seq"],
            "room_name": "",
            "sender": sender,
            "body": "x" * 200,
        },
    ]
    assert receiver.pushes_to("alice") == []
    assert len(receiver.received) == 2
    assert sent(client) == 2
    [subscription] = (await (await client.get(SUBSCRIPTIONS, headers=bob.headers)).json())["items"]
    assert subscription["last_success_at"] is not None


async def test_mentions_level_pushes_only_mentions(client, alice, bob, receiver):
    room = await create_room(client, alice, "general")
    await join(client, bob, room)  # a room's default level: mentions
    await subscribe(client, bob, receiver.subscriber("bob"))
    await send(client, alice, room, "nothing for bob")
    named = await send(client, alice, room, "hey @bob")
    everyone = await send(client, alice, room, "@room lunch")
    await drained(client)
    pushes = receiver.pushes_to("bob")
    assert sorted(p["seq"] for p in pushes) == [named["seq"], everyone["seq"]]
    assert {p["room_name"] for p in pushes} == {"general"}
    # `all` pushes every message.
    await set_level(client, bob, room, level="all")
    plain = await send(client, alice, room, "now everything")
    await drained(client)
    assert receiver.pushes_to("bob")[-1]["seq"] == plain["seq"]


async def test_muted_and_none_get_nothing(client, alice, bob, receiver):
    dm = await open_dm(client, alice, bob)
    await subscribe(client, bob, receiver.subscriber("bob"))
    await set_level(client, bob, dm, level="all", muted_until="2999-01-01T00:00:00Z")
    await send(client, alice, dm, "muted")
    await set_level(client, bob, dm, level="none")
    await send(client, alice, dm, "@bob none")
    await drained(client)
    assert receiver.received == []
    # A mute in the past is over.
    await set_level(client, bob, dm, level="all", muted_until="2001-01-01T00:00:00Z")
    after = await send(client, alice, dm, "audible")
    await drained(client)
    assert [p["seq"] for p in receiver.pushes_to("bob")] == [after["seq"]]


async def test_a_connected_member_gets_no_push(client, alice, bob, receiver):
    dm = await open_dm(client, alice, bob)
    await subscribe(client, bob, receiver.subscriber("bob"))
    ws = await connect(client, bob)
    watcher = await connect(client, alice)
    await send(client, alice, dm, "you are here")
    await drained(client)
    assert receiver.received == []
    await ws.close()
    while (await next_of(watcher, "presence")) != {  # alice's socket hears bob leave
        "type": "presence",
        "user_id": bob.id,
        "status": "offline",
    }:
        pass
    later = await send(client, alice, dm, "you left")
    push = await receiver.next_push()
    assert push.payload["seq"] == later["seq"]
    await watcher.close()


async def test_edits_never_push(client, alice, bob, receiver):
    room = await create_room(client, alice, "general")
    await join(client, bob, room)
    await subscribe(client, bob, receiver.subscriber("bob"))
    message = await send(client, alice, room, "plain")
    response = await client.patch(
        f"/api/v1/rooms/{room['id']}/messages/{message['id']}",
        json={"body": "now @bob"},
        headers=alice.headers,
    )
    assert response.status == 200
    await drained(client)
    assert receiver.received == []


async def test_no_preview_sends_an_empty_body(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, outbound_private=True, push_preview=False)
    client = await aiohttp_client(create_app(config))
    alice, bob = await signup(client, "alice"), await signup(client, "bob")
    async with push_receiver() as receiver:
        receiver.server_key = (await (await client.get("/api/v1/server")).json())[
            "vapid_public_key"
        ]
        dm = await open_dm(client, alice, bob)
        await subscribe(client, bob, receiver.subscriber("bob"))
        message = await send(client, alice, dm, "secret plans")
        push = await receiver.next_push()
    assert push.payload["seq"] == message["seq"] and push.payload["body"] == ""


# --- what push services answer -----------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_removes_the_subscription(client, alice, bob, receiver, status):
    dm = await open_dm(client, alice, bob)
    gone = receiver.subscriber("gone", status=status)
    await subscribe(client, bob, gone)
    kept = await subscribe(client, bob, receiver.subscriber("kept"))
    await send(client, alice, dm, "hello")
    await drained(client)
    assert gone.attempts == 1
    items = (await (await client.get(SUBSCRIPTIONS, headers=bob.headers)).json())["items"]
    assert [s["id"] for s in items] == [kept["id"]]
    assert client.app[keys.METRICS].push_subscriptions_removed._value.get() == 1
    await send(client, alice, dm, "again")
    await drained(client)
    assert gone.attempts == 1 and len(receiver.pushes_to("kept")) == 2


async def test_server_errors_are_retried_three_times_at_most(client, alice, bob, receiver):
    client.app[keys.PUSHER].retry_delays = (0.01, 0.01)
    dm = await open_dm(client, alice, bob)
    failing = receiver.subscriber("failing", status=503)
    await subscribe(client, bob, failing)
    await send(client, alice, dm, "hello")
    await drained(client)
    assert failing.attempts == 3
    failures = client.app[keys.METRICS].push_failures
    assert failures.labels("status_5xx")._value.get() == 3
    # A 503 is no reason to forget the browser.
    items = (await (await client.get(SUBSCRIPTIONS, headers=bob.headers)).json())["items"]
    assert len(items) == 1 and items[0]["last_success_at"] is None


async def test_a_hanging_push_service_does_not_delay_sends(client, alice, bob, receiver):
    dm = await open_dm(client, alice, bob)
    await subscribe(client, bob, receiver.subscriber("bob"))
    ws = await connect(client, alice)

    async def ack_latencies(count: int) -> list[float]:
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            await send_frame(ws, {"type": "send", "room_id": dm["id"], "body": f"m{i}"})
            while (await receive(ws))["type"] != "ack":
                pass
            latencies.append(time.perf_counter() - started)
        return latencies

    normal = await ack_latencies(10)
    await drained(client)
    assert len(receiver.pushes_to("bob")) == 10
    hanging = receiver.subscriber("bob", hang=True)  # the same endpoint now hangs
    while_hanging = await ack_latencies(10)
    assert hanging.attempts >= 1  # the pushes are stuck in the receiver...
    assert not client.app[keys.PUSHER]._idle.is_set()  # ...and still in flight
    # ...and the sends were acknowledged as fast as before.
    assert max(while_hanging) < 1.0, while_hanging
    assert statistics.median(while_hanging) < max(5 * statistics.median(normal), 0.1)
    await ws.close()


# --- subscriptions -------------------------------------------------------------------------


async def test_subscriptions_are_per_endpoint_and_per_user(client, alice, bob, receiver):
    phone = receiver.subscriber("phone")
    created = await subscribe(client, bob, phone)
    assert created["endpoint_origin"] == receiver.origin
    assert created["last_success_at"] is None
    again = await client.post(SUBSCRIPTIONS, json=phone.subscription, headers=bob.headers)
    assert again.status == 200 and (await again.json())["id"] == created["id"]
    # Another user registering the same endpoint takes it over.
    moved = await client.post(SUBSCRIPTIONS, json=phone.subscription, headers=alice.headers)
    assert moved.status == 201 and (await moved.json())["id"] == created["id"]
    bobs = await (await client.get(SUBSCRIPTIONS, headers=bob.headers)).json()
    assert bobs == {"items": []}
    mine = await (await client.get(SUBSCRIPTIONS, headers=alice.headers)).json()
    assert [s["id"] for s in mine["items"]] == [created["id"]]
    path = f"{SUBSCRIPTIONS}/{created['id']}"
    await error_of(await client.delete(path, headers=bob.headers), 404)
    assert (await client.delete(path, headers=alice.headers)).status == 204
    await error_of(await client.delete(path, headers=alice.headers), 404)


async def test_a_user_keeps_ten_subscriptions(client, bob, receiver):
    ids = [(await subscribe(client, bob, receiver.subscriber(f"b{i}")))["id"] for i in range(11)]
    items = (await (await client.get(SUBSCRIPTIONS, headers=bob.headers)).json())["items"]
    assert [s["id"] for s in items] == ids[1:]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "ftp://127.0.0.1/x"}, "endpoint"),
        ({"endpoint": "not a url"}, "endpoint"),
        ({"endpoint": "https://u:p@127.0.0.1/x"}, "endpoint"),
        ({"endpoint": 5}, "endpoint"),
        ({"keys": None}, "keys"),
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys"),
        ({"keys": {"p256dh": "B" + "A" * 86, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys"),
    ],
)
async def test_bad_subscriptions_name_the_field(client, bob, receiver, change, field):
    body = receiver.subscriber("bad").subscription | change
    error = await error_of(await client.post(SUBSCRIPTIONS, json=body, headers=bob.headers), 400)
    assert field in error["details"]["fields"]


async def test_a_short_auth_secret_is_refused(client, bob, receiver):
    body = receiver.subscriber("bad").subscription
    body["keys"]["auth"] = body["keys"]["auth"][:10]
    error = await error_of(await client.post(SUBSCRIPTIONS, json=body, headers=bob.headers), 400)
    assert set(error["details"]["fields"]) == {"keys"}


async def test_deactivation_removes_the_subscriptions(client, alice, bob, receiver):
    await make_admin(client, alice)
    await subscribe(client, bob, receiver.subscriber("bob"))
    response = await client.patch(
        f"/api/v1/admin/users/{bob.id}", json={"deactivated": True}, headers=alice.headers
    )
    assert response.status == 200
    db = client.app[keys.DB]
    assert await db.push_subscriptions(bob.id) == []
    assert await db.any_push_subscription() is False


# --- refused endpoints without CHAT_OUTBOUND_PRIVATE ------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/push/x",
        "https://127.0.0.1:8443/push/x",
        "https://[::1]/push/x",
        "https://10.1.2.3/push/x",
        "https://192.168.0.10/push/x",
        "https://169.254.169.254/latest",
        "https://100.64.0.1/push/x",
        "https://[::ffff:127.0.0.1]/push/x",
        "https://[64:ff9b::a00:1]/push/x",
        "https://localhost/push/x",  # a name that resolves to loopback
        "http://8.8.8.8/push/x",  # public, but not https
    ],
)
async def test_private_endpoints_are_refused(aiohttp_client, tmp_path, database_url, endpoint):
    client = await aiohttp_client(create_app(make_config(tmp_path, database_url)))
    bob = await signup(client, "bob")
    body = Subscriber("x", endpoint).subscription
    response = await client.post(SUBSCRIPTIONS, json=body, headers=bob.headers)
    error = await error_of(response, 400)
    assert set(error["details"]["fields"]) == {"endpoint"}, error
    assert await client.app[keys.DB].push_subscriptions(bob.id) == []


# --- the VAPID key -------------------------------------------------------------------------


def test_the_vapid_key_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    first = Vapid(load_private_key(config), "https://chat.example")
    path = tmp_path / "data" / "vapid_private_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Vapid(load_private_key(config), "https://chat.example")
    assert again.public_key == first.public_key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_the_vapid_key_can_be_given_as_pem_or_raw(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    public = {
        Vapid(load_private_key(Config(data_dir=tmp_path, vapid_private_key=text)), "x").public_key
        for text in (pem, raw)
    }
    assert len(public) == 1
    assert not (tmp_path / "vapid_private_key.pem").exists()
    other_curve = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="CHAT_VAPID_PRIVATE_KEY"):
        load_private_key(Config(data_dir=tmp_path, vapid_private_key=other_curve.decode()))
    with pytest.raises(ConfigError, match="CHAT_VAPID_PRIVATE_KEY") as refused:
        Config.from_env({"CHAT_VAPID_PRIVATE_KEY": "not-a-key"})
    assert "not-a-key" not in str(refused.value)  # a secret is never echoed


def test_vapid_tokens_are_es256_for_the_origin_and_expire_within_a_day() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    vapid = Vapid(key, "mailto:ops@chat.example")
    header = vapid.authorization("https://push.example:8443/send/abc", now=1_000_000)
    token, public = re.fullmatch(r"vapid t=(\S+), k=(\S+)", header).groups()
    assert public == vapid.public_key
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["ES256"],
        audience="https://push.example:8443",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "mailto:ops@chat.example"
    assert 1_000_000 < claims["exp"] <= 1_000_000 + 24 * 3600
    # Reused for the same push service until shortly before it expires.
    assert vapid.authorization("https://push.example:8443/other", now=1_000_100) == header
    assert vapid.authorization("https://push.example:8443/x", now=claims["exp"] - 60) != header
