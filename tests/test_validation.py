"""Request bodies and fields as clients really send them (API.md "Conventions")."""

from __future__ import annotations

import itertools
import json

import pytest

from chat_server.errors import InvalidRequest
from chat_server.validation import MAX_JSON_BYTES, Validator

from .conftest import PASSWORD, error_of
from .rawhttp import chunk, connect, request_head
from .test_messages import messages_path
from .test_rooms import create_room

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
