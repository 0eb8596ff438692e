"""Request bodies and fields as clients really send them (API.md "Conventions")."""

from __future__ import annotations

import itertools
import json

import pytest

from chat_server.errors import InvalidRequest
from chat_server.validation import MAX_JSON_BYTES, Validator

from .helpers import PASSWORD, create_room, error_of, messages_path
from .helpers.rawhttp import chunk, connect, request_head
from .helpers.ws import connect as ws_connect
from .helpers.ws import next_of, receive

PAUSE = 0.05  # long enough that the server has read what came before

# --- JSON bodies that arrive in more than one read ----------------------------------


async def post_in_pieces(client, path, headers, body: bytes, *cuts: int, chunked=False):
    """POSTs `body` as separate writes cut at `cuts`, pausing between them."""
    bounds = [0, *cuts, len(body)]
    parts = [body[a:b] for a, b in itertools.pairwise(bounds)]
    if chunked:
        parts = [chunk(part) for part in parts] + [chunk(b"")]
    length = None if chunked else len(body)
    conn = await connect(client)
    try:
        head = request_head("POST", path, headers, content_length=length)
        await conn.send(head + parts[0], *parts[1:], pause=PAUSE)
        return await conn.response()
    finally:
        await conn.close()


async def test_message_split_at_one_packet_is_read_whole(client, alice):
    room = await create_room(client, alice)
    text = "é" + "x" * 2999  # 3,000 characters
    body = json.dumps({"body": text}).encode()
    status, sent = await post_in_pieces(client, messages_path(room), alice.headers, body, 1448)
    assert status == 201, sent
    assert sent["body"] == text


async def test_login_split_after_ten_bytes_is_read_whole(client, alice):
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    status, answer = await post_in_pieces(client, "/api/v1/auth/login", {}, body, 10)
    assert status == 200, answer
    assert answer["user"]["id"] == alice.id


async def test_large_body_sent_in_one_go_is_read_whole(client, alice):
    room = await create_room(client, alice)
    body = json.dumps({"body": "big", "padding": "p" * 900_000}).encode()  # unknown: ignored
    status, sent = await post_in_pieces(client, messages_path(room), alice.headers, body)
    assert status == 201, sent
    assert sent["body"] == "big"


async def test_chunked_body_in_pieces_is_read_whole(client, alice):
    room = await create_room(client, alice)
    text = " ".join(["chunked"] * 300)
    body = json.dumps({"body": text}).encode()
    status, sent = await post_in_pieces(
        client, messages_path(room), alice.headers, body, 5, 700, 1500, chunked=True
    )
    assert status == 201, sent
    assert sent["body"] == text


@pytest.mark.parametrize("chunked", [False, True])
async def test_json_body_over_one_mib_is_413(client, alice, chunked):
    room = await create_room(client, alice)
    body = json.dumps({"body": "x", "padding": "p" * MAX_JSON_BYTES}).encode()
    cuts = range(300_000, len(body), 300_000)
    status, answer = await post_in_pieces(
        client, messages_path(room), alice.headers, body, *cuts, chunked=chunked
    )
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"


async def test_json_body_of_exactly_one_mib_is_read(client, alice):
    room = await create_room(client, alice)
    prefix = b'{"body": "edge", "padding": "'
    body = prefix + b"p" * (MAX_JSON_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_JSON_BYTES
    status, sent = await post_in_pieces(
        client, messages_path(room), alice.headers, body, 100, 500_000, chunked=True
    )
    assert status == 201, sent


# --- message bodies count after trimming --------------------------------------------


async def test_body_of_4000_characters_after_trimming_is_valid(client, alice):
    room = await create_room(client, alice)
    padded = "  " + "x" * 4000 + "  "
    response = await client.post(messages_path(room), json={"body": padded}, headers=alice.headers)
    assert response.status == 201, await response.text()
    message = await response.json()
    assert message["body"] == "x" * 4000
    path = f"{messages_path(room)}/{message['id']}"
    edited = await client.patch(
        path, json={"body": "\n" + "y" * 4000 + "\n"}, headers=alice.headers
    )
    assert edited.status == 200, await edited.text()
    assert (await edited.json())["body"] == "y" * 4000
    for too_long in ("x" * 4001, "  " + "x" * 4001 + "  "):
        refused = await client.post(
            messages_path(room), json={"body": too_long}, headers=alice.headers
        )
        assert (await error_of(refused, 400))["details"]["fields"].keys() == {"body"}
        refused = await client.patch(path, json={"body": too_long}, headers=alice.headers)
        assert (await error_of(refused, 400))["details"]["fields"].keys() == {"body"}


# --- whole-number floats are integers (JSON Schema `type: integer`) -----------------


async def test_whole_number_floats_are_accepted_as_integers(client, alice, bob):
    room = await create_room(client, alice)
    members = f"/api/v1/rooms/{room['id']}/members"
    added = await client.post(
        members, json={"user_id": float(bob.id), "role": "member"}, headers=alice.headers
    )
    assert added.status == 201, await added.text()
    assert (await added.json())["user"]["id"] == bob.id

    first = await client.post(messages_path(room), json={"body": "one"}, headers=alice.headers)
    parent = await first.json()
    reply = await client.post(
        messages_path(room),
        json={"body": "two", "reply_to": float(parent["id"])},
        headers=alice.headers,
    )
    assert reply.status == 201, await reply.text()
    assert (await reply.json())["reply_to"] == parent["id"]

    read = await client.post(
        f"/api/v1/rooms/{room['id']}/read", json={"seq": 1.0}, headers=bob.headers
    )
    assert read.status == 204, await read.text()

    dm = await client.post("/api/v1/dm", json={"user_id": float(bob.id)}, headers=alice.headers)
    assert dm.status == 201, await dm.text()


async def test_whole_number_floats_in_id_lists(client, alice):
    room = await create_room(client, alice)
    form_response = await client.post(
        "/api/v1/media",
        data={"file": b"attached text"},
        headers=alice.headers,
    )
    assert form_response.status == 201, await form_response.text()
    media = await form_response.json()
    sent = await client.post(
        messages_path(room),
        json={"body": "", "attachments": [float(media["id"])]},
        headers=alice.headers,
    )
    assert sent.status == 201, await sent.text()
    assert [m["id"] for m in (await sent.json())["attachments"]] == [media["id"]]


async def test_whole_number_floats_over_websocket(client, alice):
    room = await create_room(client, alice)
    await client.post(messages_path(room), json={"body": "one"}, headers=alice.headers)
    ws = await ws_connect(client, alice)
    try:
        await ws.send_json({"type": "read", "ref": "r1", "room_id": float(room["id"]), "seq": 1.0})
        await ws.send_json({"type": "ping"})
        kinds = []
        while not kinds or kinds[-1] != "pong":
            kinds.append((await receive(ws))["type"])
        assert "error" not in kinds, kinds
        await ws.send_json({"type": "read", "ref": "r2", "room_id": room["id"], "seq": 1.5})
        error = await next_of(ws, "error")
        assert (error["ref"], error["code"]) == ("r2", "invalid_request")
    finally:
        await ws.close()


@pytest.mark.parametrize("value", [1.5, -1.0, 0.0, 1e300, 9.3e18, True])
async def test_other_numbers_in_integer_fields_stay_400(client, alice, value):
    room = await create_room(client, alice)
    path = f"/api/v1/rooms/{room['id']}/members"
    response = await client.post(path, json={"user_id": value}, headers=alice.headers)
    assert (await error_of(response, 400))["details"]["fields"].keys() == {"user_id"}


def test_validator_reads_whole_number_floats_as_int() -> None:
    v = Validator({"a": 3.0, "b": 2.5, "ids": [1.0, 2, 2.0], "bad": [1.5]})
    assert v.integer("a", required=True) == 3
    assert type(v.integer("a")) is int
    assert v.integer("b") is None
    assert v.id_list("ids", max_items=5) == [1, 2]
    assert v.id_list("bad", max_items=5) == []
    assert v.errors.keys() == {"b", "bad"}


def test_validator_query_strings_stay_digits_only() -> None:
    v = Validator({"limit": "5", "cursor": "1.0"}, query=True)
    assert v.integer("limit") == 5
    assert v.integer("cursor") is None
    assert v.errors.keys() == {"cursor"}


def test_required_getters_give_placeholders_that_check_refuses() -> None:
    v = Validator({"n": "x"})
    assert v.string("missing", required=True, max_len=5) == ""
    assert v.integer("n", required=True) == 0
    assert v.choice("kind", ("a", "b"), required=True) == ""
    with pytest.raises(InvalidRequest) as raised:
        v.check()
    assert raised.value.details == {
        "fields": {
            "missing": "required",
            "n": "an integer 1-9223372036854775807",
            "kind": "required",
        }
    }


def test_trimming_removes_what_the_documents_pattern_calls_blank():
    """The OpenAPI document says "not blank" with the pattern `\\S` (ECMAScript's
    whitespace); trimming removes exactly that, so an information separator
    (U+001C, whitespace to Python's str.strip) is text, and an ideographic space
    is blank."""
    fields = {"separator": "\x1c", "ideographic": " \u3000 ", "padded": "\u2003ok\ufeff"}
    v = Validator(fields)
    assert v.string("separator", min_len=1, max_len=8, strip=True) == "\x1c"
    assert v.string("padded", min_len=1, max_len=8, strip=True) == "ok"
    v.string("ideographic", min_len=1, max_len=8, strip=True)
    with pytest.raises(InvalidRequest) as refused:
        v.check()
    assert "ideographic" in str(refused.value.details)
