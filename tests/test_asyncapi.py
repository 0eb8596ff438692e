"""The AsyncAPI document of the WebSocket: its structure, its schemas, its route, and
the frame checks every WebSocket test runs through (tests/wsutil.py)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web

from .helpers.ws import ASYNCAPI_PATH, FRAME_FAILURES, FrameSchemas, frame_schemas, receive, resolve

DOCUMENT = json.loads(ASYNCAPI_PATH.read_text())
OPENAPI = json.loads((ASYNCAPI_PATH.parent / "openapi.json").read_text())
DRAFT_07 = "http://json-schema.org/draft-07/schema#"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# Objects the REST API returns too: the same shape in both documents.
SHARED_SCHEMAS = ("Id", "Timestamp", "Media", "User", "Room", "Message")

USER = {
    "id": 1,
    "username": "alice",
    "display_name": "Alice",
    "bio": "",
    "avatar_media_id": None,
    "created_at": "2026-11-23T22:37:53.123Z",
    "is_admin": False,
    "is_bot": False,
    "deactivated": False,
}
ROOM = {
    "id": 3,
    "kind": "public",
    "name": "general",
    "topic": "",
    "created_by": 1,
    "created_at": "2026-11-23T22:37:53.123Z",
    "last_seq": 2,
    "last_pos": 9,
    "member_count": 2,
    "my_role": "owner",
    "my_last_read_seq": 2,
    "unread_count": 0,
    "unread_mentions": 0,
}
MESSAGE = {
    "id": 7,
    "room_id": 3,
    "seq": 2,
    "sender_id": 1,
    "body": "hello",
    "client_id": None,
    "reply_to": None,
    "attachments": [],
    "created_at": "2026-11-23T22:37:53.123Z",
    "edited_at": None,
    "deleted": False,
    "thread_id": None,
    "mentions": {"user_ids": [], "room": False},
    "thread": None,
    "pinned": False,
    "reactions": [],
}
# The objects with the fields revision 2 of the contract adds.
USER_2 = USER | {"is_admin": False, "is_bot": False, "deactivated": False}
ROOM_2 = ROOM | {
    "last_pos": 9,
    "unread_mentions": 0,
    "notify": {"level": "mentions", "muted_until": None},
}
MESSAGE_2 = MESSAGE | {
    "thread_id": None,
    "thread": {"reply_count": 1, "last_reply_at": "2026-11-23T22:38:00.000Z"},
    "pinned": True,
    "mentions": {"user_ids": [2], "room": False},
    "reactions": [{"emoji": "👍", "count": 2, "me": True}],
}

GOOD_SERVER_FRAMES = [
    {"type": "ready", "user": USER_2, "rooms": [{"room_id": 3, "last_seq": 2, "last_pos": 9}]},
    {"type": "resumed"},
    {"type": "gap", "room_id": 3, "from_pos": 1, "to_pos": 40},
    {"type": "pong", "ref": "p1"},
    {"type": "ack", "ref": "r1", "message": MESSAGE},
    {"type": "ack", "result": {"emoji": ":tada:", "count": 1, "me": True}},
    {"type": "error", "code": "not_found", "message": "no such room", "ref": "x"},
    {"type": "message.new", "room_id": 3, "pos": 9, "message": MESSAGE_2},
    {"type": "message.deleted", "room_id": 3, "pos": 10, "message": MESSAGE | {"deleted": True}},
    {"type": "message.pinned", "room_id": 3, "pos": 11, "message": MESSAGE_2, "by": 1},
    {
        "type": "reaction.added",
        "room_id": 3,
        "pos": 12,
        "message_id": 7,
        "seq": 2,
        "emoji": "👍",
        "user_id": 2,
        "count": 2,
    },
    {"type": "member.joined", "room_id": 3, "pos": 1, "user": USER_2, "role": "owner", "by": None},
    {"type": "member.left", "room_id": 3, "pos": 13, "user": USER_2, "reason": "kicked"},
    {"type": "member.role", "room_id": 3, "pos": 14, "user": USER_2, "role": "admin"},
    {"type": "room.updated", "room_id": 3, "pos": 15, "room": ROOM_2},
    {"type": "room.added", "room": ROOM_2},
    {"type": "room.removed", "room": ROOM | {"my_role": None, "notify": None}},
    {"type": "typing", "room_id": 3, "user_id": 2},
    {"type": "read", "room_id": 3, "user_id": 2, "seq": 2},
    {"type": "presence", "user_id": 2, "status": "offline"},
    {"type": "notify", "room_id": 3, "level": "none", "muted_until": "2026-11-24T00:00:00.000Z"},
    {
        "type": "report.new",
        "report": {
            "id": 1,
            "state": "open",
            "reason": "spam",
            "comment": "",
            "reporter": USER_2,
            "message": MESSAGE_2,
            "room": {"id": 3, "name": "general", "kind": "public"},
            "created_at": "2026-11-23T22:37:53.123Z",
            "resolved_by": None,
        },
    },
    {"type": "presence", "user_id": 2, "status": "online", "added_later": [1, 2]},  # open
]
BAD_SERVER_FRAMES = [
    {"type": "message.new", "message": MESSAGE},  # a room event without its room_id and pos
    {"type": "gap", "room_id": 3, "from_seq": 1, "to_seq": 40},
    {"type": "ready", "user": USER, "rooms": [{"room_id": 3, "last_seq": 2}]},
    {"type": "teleport"},
    {"no": "type"},
    {"type": "ready", "user": USER},
    {"type": "ready", "user": USER, "rooms": [{"room_id": 0, "last_seq": 2}]},
    {"type": "gap", "from_pos": 1, "to_pos": 4},
    {"type": "ack", "ref": "r1"},
    {"type": "error", "code": "oops", "message": "?"},
    {"type": "message.new", "message": {k: v for k, v in MESSAGE.items() if k != "seq"}},
    {"type": "message.new", "message": MESSAGE, "pos": 0},
    {"type": "message.edited", "message": MESSAGE | {"edited_at": "yesterday"}},
    {"type": "message.new", "message": MESSAGE_2 | {"mentions": {"user_ids": ["2"]}}},
    {"type": "member.left", "room_id": 3, "user": USER, "reason": "fired"},
    {"type": "member.joined", "user": USER},
    {"type": "room.added", "room": ROOM | {"kind": "secret"}},
    {"type": "room.added", "room": ROOM_2 | {"notify": {"level": "loud", "muted_until": None}}},
    {"type": "presence", "user_id": 2, "status": "away"},
    {"type": "read", "room_id": 3, "user_id": 2},
    {"type": "typing", "room_id": 3, "user_id": 2**63},
]
GOOD_CLIENT_FRAMES = [
    {"type": "auth", "token": "t"},
    {"type": "auth", "token": "t", "rooms": {"3": 9}},
    {"type": "resume", "rooms": {"3": 9, "4": 0}, "ref": "r"},
    {"type": "send", "room_id": 3, "body": "hi", "client_id": "c-1", "reply_to": 7},
    {"type": "send", "room_id": 3, "body": "", "attachments": [1, 2]},
    {"type": "react", "room_id": 3, "message_id": 7, "emoji": "👍"},
    {"type": "unreact", "room_id": 3, "message_id": 7, "emoji": ":tada:"},
    {"type": "typing", "room_id": 3},
    {"type": "read", "room_id": 3, "seq": 0},
    {"type": "ping"},
]
# The frames the server answers with invalid_request (tests/test_ws.py).
BAD_CLIENT_FRAMES = [
    {"type": "teleport"},
    {"no": "type"},
    {"type": "auth"},
    {"type": "send", "room_id": "1", "body": "x"},
    {"type": "send", "room_id": 3, "body": 7},
    {"type": "send", "room_id": 2**70, "body": "x"},
    {"type": "send", "room_id": 3, "body": "x", "client_id": "é"},
    {"type": "read", "room_id": 3, "seq": -5},
    {"type": "resume", "rooms": [1]},
    {"type": "resume", "rooms": {"x": 1}},
    {"type": "react", "room_id": 3, "emoji": "👍"},
    {"type": "ping", "ref": {"deep": True}},
    {"type": "ping", "ref": "r" * 257},
]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_document_has_the_asyncapi_3_structure():
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= set(DOCUMENT["info"])
    assert DOCUMENT["defaultContentType"] == "application/json"
    for server in DOCUMENT["servers"].values():
        assert {"host", "protocol"} <= set(server)
    (channel,) = DOCUMENT["channels"].values()
    assert channel["address"] == "/api/v1/ws"
    for ref in _refs(DOCUMENT):
        assert ref.startswith("#/"), ref
        resolve(DOCUMENT, ref)  # every reference points at something
    channel_messages = {f"#/channels/ws/messages/{key}" for key in channel["messages"]}
    used = set()
    for name, operation in DOCUMENT["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        assert operation["channel"] == {"$ref": "#/channels/ws"}, name
        refs = [m["$ref"] for m in operation["messages"]]
        refs += [m["$ref"] for m in operation.get("reply", {}).get("messages", [])]
        assert set(refs) <= channel_messages, name  # operations use the channel's messages
        used |= set(refs)
    assert used == channel_messages, "messages no operation sends or receives"
    assert {m["$ref"] for m in channel["messages"].values()} == {
        f"#/components/messages/{key}" for key in DOCUMENT["components"]["messages"]
    }


def test_every_message_names_its_frame_type_once_per_direction():
    schemas = frame_schemas()
    for message in DOCUMENT["components"]["messages"].values():
        payload = resolve(DOCUMENT, message["payload"]["$ref"])
        assert payload["properties"]["type"] == {"const": message["name"]}
        assert "type" in payload["required"]
    client = [m for k, m in DOCUMENT["components"]["messages"].items() if k.startswith("client.")]
    assert sorted(schemas.by_direction["client"]) == sorted(m["name"] for m in client)
    assert len(schemas.by_direction["server"]) + len(client) == len(
        DOCUMENT["components"]["messages"]
    )


@pytest.mark.parametrize("draft", [DRAFT_2020_12, DRAFT_07])
def test_every_schema_is_a_valid_json_schema(draft):
    schemas = DOCUMENT["components"]["schemas"]
    for name, schema in schemas.items():
        jsonschema_rs.meta.validate({"$schema": draft, **schema})
        assert "$schema" not in schema and "$id" not in schema, name
    for key, message in DOCUMENT["components"]["messages"].items():
        jsonschema_rs.meta.validate({"$schema": draft, **message["payload"]})
        for example in message.get("examples", []):
            assert frame_schemas().errors(example["payload"], key.split(".")[0]) == [], key
    FrameSchemas(DOCUMENT)  # compiles every payload with its references resolved


def _without_prose(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _without_prose(v) for k, v in schema.items() if k not in ("description", "examples")
        }
    if isinstance(schema, list):
        return [_without_prose(v) for v in schema]
    return schema


@pytest.mark.parametrize("name", SHARED_SCHEMAS)
def test_objects_are_those_of_the_openapi_document(name):
    mine = _without_prose(DOCUMENT["components"]["schemas"][name])
    rest = _without_prose(OPENAPI["components"]["schemas"][name])
    assert mine.get("required") == rest.get("required")
    for field, schema in rest.get("properties", {}).items():
        assert mine["properties"][field] == schema, field
    assert {k: v for k, v in mine.items() if k != "properties"} == {
        k: v for k, v in rest.items() if k != "properties"
    }


@pytest.mark.parametrize("frame", GOOD_SERVER_FRAMES, ids=lambda f: f.get("type"))
def test_good_server_frames_validate(frame):
    assert frame_schemas().errors(frame, "server") == []


@pytest.mark.parametrize("frame", BAD_SERVER_FRAMES, ids=lambda f: str(f.get("type")))
def test_bad_server_frames_fail(frame):
    assert frame_schemas().errors(frame, "server") != []


@pytest.mark.parametrize("frame", GOOD_CLIENT_FRAMES, ids=lambda f: f.get("type"))
def test_good_client_frames_validate(frame):
    assert frame_schemas().errors(frame, "client") == []


@pytest.mark.parametrize("frame", BAD_CLIENT_FRAMES, ids=lambda f: str(f.get("type")))
def test_bad_client_frames_fail(frame):
    assert frame_schemas().errors(frame, "client") != []


def test_directions_are_kept_apart():
    # `typing` and `read` exist both ways, with different fields.
    assert frame_schemas().errors({"type": "typing", "room_id": 3}, "server") != []
    assert frame_schemas().errors({"type": "ready", "user": USER, "rooms": []}, "client") != []


async def test_document_is_served_without_auth(client):
    response = await client.get("/api/v1/asyncapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == DOCUMENT


async def test_received_frames_are_checked(aiohttp_client):
    """A frame that does not match the document is recorded, whoever reads it."""

    async def lying_server(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "ready", "user": USER, "rooms": []})
        await ws.send_json({"type": "ready", "rooms": []})
        await ws.send_str("not json")
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", lying_server)
    ws = await (await aiohttp_client(app)).ws_connect("/ws")
    before = len(FRAME_FAILURES)
    await receive(ws)
    assert len(FRAME_FAILURES) == before
    await ws.receive_json()
    await ws.receive_str()
    recorded = FRAME_FAILURES[before:]
    del FRAME_FAILURES[before:]  # expected here: not this test's failure
    assert len(recorded) == 2
    assert '"user" is a required property' in recorded[0]
    assert "not JSON" in recorded[1]
