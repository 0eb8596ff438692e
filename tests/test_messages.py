"""Messages over REST: send, idempotency, history, edit, delete, read markers, search."""

from __future__ import annotations

import asyncio

from .helpers import create_room, error_of, messages_path, send, signup


async def test_send_assigns_contiguous_seqs_and_moves_the_read_marker(client, alice):
    room = await create_room(client, alice)
    sent = [await send(client, alice, room, f"m{i}") for i in range(3)]
    assert [m["seq"] for m in sent] == [1, 2, 3]
    first = sent[0]
    assert first["sender_id"] == alice.id and first["room_id"] == room["id"]
    assert first["attachments"] == [] and first["deleted"] is False and first["edited_at"] is None
    listed = await (await client.get(f"/api/v1/rooms/{room['id']}", headers=alice.headers)).json()
    assert listed["last_seq"] == 3 and listed["my_last_read_seq"] == 3
    assert listed["unread_count"] == 0


async def test_idempotent_retry_returns_the_original(client, alice):
    room = await create_room(client, alice)
    first = await client.post(
        messages_path(room), json={"body": "once", "client_id": "c-1"}, headers=alice.headers
    )
    assert first.status == 201
    retry = await client.post(
        messages_path(room), json={"body": "different", "client_id": "c-1"}, headers=alice.headers
    )
    assert retry.status == 200
    assert await retry.json() == await first.json()
    history = await (await client.get(messages_path(room), headers=alice.headers)).json()
    assert [m["body"] for m in history["items"]] == ["once"]


async def test_send_rejects_bad_input(client, alice, bob):
    room = await create_room(client, alice)
    other = await create_room(client, alice, name="other")
    parent = await send(client, alice, other, "elsewhere")
    cases = [
        ({}, {"body"}),
        ({"body": "   "}, {"body"}),
        ({"body": "x" * 4001}, {"body"}),
        ({"body": 5}, {"body"}),
        ({"body": "ok", "client_id": ""}, {"client_id"}),
        ({"body": "ok", "client_id": "é"}, {"client_id"}),
        ({"body": "ok", "client_id": "x" * 65}, {"client_id"}),
        ({"body": "ok", "reply_to": "1"}, {"reply_to"}),
        ({"body": "ok", "reply_to": parent["id"]}, {"reply_to"}),
        ({"body": "ok", "attachments": [1, "2"]}, {"attachments"}),
        ({"body": "ok", "attachments": list(range(1, 20))}, {"attachments"}),
        ({"body": "ok", "attachments": [12345]}, {"attachments"}),
    ]
    for payload, fields in cases:
        response = await client.post(messages_path(room), json=payload, headers=alice.headers)
        error = await error_of(response, 400)
        assert set(error["details"]["fields"]) == fields, payload
    # A public room's non-member may read but not post.
    await error_of(
        await client.post(messages_path(room), json={"body": "hi"}, headers=bob.headers), 403
    )
    assert (await client.get(messages_path(room), headers=bob.headers)).status == 200


async def test_history_pages_both_ways(client, alice):
    room = await create_room(client, alice)
    for i in range(1, 8):
        await send(client, alice, room, f"m{i}")
    path = messages_path(room)
    newest = await (await client.get(f"{path}?limit=3", headers=alice.headers)).json()
    assert [m["seq"] for m in newest["items"]] == [5, 6, 7] and newest["has_more"] is True
    older = await (await client.get(f"{path}?limit=3&before_seq=5", headers=alice.headers)).json()
    assert [m["seq"] for m in older["items"]] == [2, 3, 4] and older["has_more"] is True
    oldest = await (await client.get(f"{path}?limit=3&before_seq=2", headers=alice.headers)).json()
    assert [m["seq"] for m in oldest["items"]] == [1] and oldest["has_more"] is False
    forward = await (await client.get(f"{path}?after_seq=4&limit=2", headers=alice.headers)).json()
    assert [m["seq"] for m in forward["items"]] == [5, 6] and forward["has_more"] is True
    end = await (await client.get(f"{path}?after_seq=6", headers=alice.headers)).json()
    assert [m["seq"] for m in end["items"]] == [7] and end["has_more"] is False
    for query in ("limit=0", "limit=101", "before_seq=-1", "after_seq=x"):
        error = await error_of(await client.get(f"{path}?{query}", headers=alice.headers), 400)
        assert set(error["details"]["fields"]) == {query.split("=")[0]}


async def test_edit_and_delete_rules(client, alice, bob):
    room = await create_room(client, alice)
    await client.post(f"/api/v1/rooms/{room['id']}/join", headers=bob.headers)
    mine = await send(client, bob, room, "bob's")
    path = f"{messages_path(room)}/{mine['id']}"
    await error_of(await client.patch(path, json={"body": "x"}, headers=alice.headers), 403)
    await error_of(await client.patch(path, json={"body": "  "}, headers=bob.headers), 400)
    edited = await (await client.patch(path, json={"body": "edited"}, headers=bob.headers)).json()
    assert edited["body"] == "edited" and edited["edited_at"] is not None
    assert edited["seq"] == mine["seq"]
    # The owner may delete anyone's message; the tombstone keeps id and seq.
    assert (await client.delete(path, headers=alice.headers)).status == 204
    history = await (await client.get(messages_path(room), headers=bob.headers)).json()
    tomb = history["items"][0]
    assert (tomb["id"], tomb["seq"], tomb["body"], tomb["deleted"]) == (mine["id"], 1, "", True)
    await error_of(await client.patch(path, json={"body": "again"}, headers=bob.headers), 404)
    assert (await client.delete(path, headers=bob.headers)).status == 204
    await error_of(await client.delete(f"{messages_path(room)}/999", headers=bob.headers), 404)
    carol = await signup(client, "carol")
    await client.post(f"/api/v1/rooms/{room['id']}/join", headers=carol.headers)
    other = await send(client, alice, room, "alice's")
    await error_of(
        await client.delete(f"{messages_path(room)}/{other['id']}", headers=carol.headers), 403
    )


async def test_read_marker_moves_forward_and_clamps(client, alice, bob):
    room = await create_room(client, alice)
    await client.post(f"/api/v1/rooms/{room['id']}/join", headers=bob.headers)
    for i in range(5):
        await send(client, alice, room, f"m{i}")
    read = f"/api/v1/rooms/{room['id']}/read"

    async def marker():
        got = await (await client.get(f"/api/v1/rooms/{room['id']}", headers=bob.headers)).json()
        return got["my_last_read_seq"], got["unread_count"]

    assert await marker() == (0, 5)
    assert (await client.post(read, json={"seq": 3}, headers=bob.headers)).status == 204
    assert await marker() == (3, 2)
    await client.post(read, json={"seq": 1}, headers=bob.headers)
    assert await marker() == (3, 2)
    await client.post(read, json={"seq": 999}, headers=bob.headers)
    assert await marker() == (5, 0)
    await error_of(await client.post(read, json={"seq": -1}, headers=bob.headers), 400)
    await error_of(await client.post(read, json={"seq": "2"}, headers=bob.headers), 400)


async def test_search_only_rooms_i_am_in(client, alice, bob):
    public = await create_room(client, alice, name="pub")
    private = await create_room(client, alice, name="priv", kind="private")
    await send(client, alice, public, "the quick brown fox")
    await send(client, alice, private, "a quick secret")
    await send(client, alice, private, "nothing here")
    search = "/api/v1/search"
    found = await (await client.get(f"{search}?q=quick", headers=alice.headers)).json()
    assert [m["body"] for m in found["items"]] == ["a quick secret", "the quick brown fox"]
    scoped = await client.get(f"{search}?q=quick&room_id={public['id']}", headers=alice.headers)
    assert [m["body"] for m in (await scoped.json())["items"]] == ["the quick brown fox"]
    paged = await (await client.get(f"{search}?q=quick&limit=1", headers=alice.headers)).json()
    assert len(paged["items"]) == 1 and paged["next_cursor"]
    rest = await client.get(
        f"{search}?q=quick&limit=1&cursor={paged['next_cursor']}", headers=alice.headers
    )
    assert [m["body"] for m in (await rest.json())["items"]] == ["the quick brown fox"]
    # Bob is in neither room: nothing, and the private room's text never shows.
    none = await (await client.get(f"{search}?q=quick", headers=bob.headers)).json()
    assert none["items"] == []
    odd = await client.get(f'{search}?q="%27)--%20OR%201=1', headers=alice.headers)
    assert odd.status == 200
    await error_of(await client.get(search, headers=alice.headers), 400)


async def test_concurrent_sends_with_retries_and_outsiders_keep_seqs_contiguous(client, alice, bob):
    """Sends arriving together (group-committed on PostgreSQL) keep every guarantee."""
    room = await create_room(client, alice)
    other = await create_room(client, alice, name="other")
    await send(client, alice, room, "first", client_id="dup-0")

    async def post(account, target, body, **extra):
        response = await client.post(
            messages_path(target), json={"body": body, **extra}, headers=account.headers
        )
        return response.status, await response.json()

    results = await asyncio.gather(
        *(post(alice, room, f"m{i}", client_id=f"c{i}") for i in range(20)),
        *(post(alice, other, f"o{i}") for i in range(5)),
        *(post(bob, room, "not a member") for _ in range(3)),
    )
    assert [status for status, _ in results] == [201] * 25 + [403] * 3
    retries = await asyncio.gather(
        post(alice, room, "retry", client_id="dup-0"),
        post(alice, room, "retry again", client_id="c3"),
        post(alice, room, "new", client_id="c-new"),
    )
    assert [status for status, _ in retries] == [200, 200, 201]
    assert retries[0][1]["body"] == "first" and retries[1][1] == results[3][1]
    history = await (await client.get(messages_path(room), headers=alice.headers)).json()
    assert [m["seq"] for m in history["items"]] == list(range(1, 23))
    assert len({m["client_id"] for m in history["items"]}) == 22
    other_history = await (await client.get(messages_path(other), headers=alice.headers)).json()
    assert [m["seq"] for m in other_history["items"]] == list(range(1, 6))
    mine = await (await client.get(f"/api/v1/rooms/{room['id']}", headers=alice.headers)).json()
    assert mine["my_last_read_seq"] == 22
