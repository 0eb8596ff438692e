"""Mentions (API.md "Conversation", Room `unread_mentions`, `GET /users/me/mentions`),
on both engines, and the body scan on its own.

`@username` of a member (at a word start, case-insensitive) and `@room` fill a
message's `mentions`; `@room` counts for the room's owner and admins, or in a room
of at most 20 members. Mentions after the read marker count in `unread_mentions`;
an edit recomputes them and reports only what is newly mentioned; a deleted
message mentions nobody.
"""

from __future__ import annotations

import pytest

from chat_server import keys
from chat_server.mentions import find
from chat_server.models import Mentions

from .helpers import create_room, join, send, signup
from .helpers.conversation import (
    delete,
    edit,
    get_json,
    leave,
    mark_read,
    messages_by_id,
    replayed_messages,
    room_of,
)

MINE = "/api/v1/users/me/mentions"


def mentioned(message: dict) -> tuple[list[int], bool]:
    return message["mentions"]["user_ids"], message["mentions"]["room"]


# --- the body scan ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "names", "room"),
    [
        ("no at sign", [], False),
        ("hi @Bob", ["bob"], False),
        ("@bob, @carol: look (@dave)", ["bob", "carol", "dave"], False),
        ("mail bob@example.com or x@@bob", [], False),
        ("well.@bob and a-@bob", [], False),
        ("thanks @bob.", ["bob", "bob."], False),
        ("@bob.smith and @bob.smith.", ["bob.smith", "bob.smith."], False),
        ("@room, @ROOM! @room.", [], True),
        ("@rooms @room.x", ["room.x", "rooms"], False),
        ("@ab and @" + "x" * 33, [], False),
        ("@bob @BOB @bob", ["bob"], False),
    ],
)
def test_the_scan_finds_names_at_word_starts(body, names, room):
    written = find(body)
    assert written.usernames() == names
    assert written.room is room


def test_the_longer_reading_wins_when_it_names_a_member():
    written = find("ping @bob. and @ali-")
    assert written.resolve({"bob": 2, "bob.": 3, "ali": 4}) == (3, 4)
    assert written.resolve({"bob": 2}) == (2,)


# --- sends ---------------------------------------------------------------------------------


async def test_a_members_mention_counts_until_read(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice)
    await join(client, bob, room)
    hello = await send(client, alice, room, "hello @Bob, and @carol (not in here)")
    assert mentioned(hello) == ([bob.id], False)
    assert (await room_of(client, bob, room))["unread_mentions"] == 1
    assert (await room_of(client, alice, room))["unread_mentions"] == 0
    # A non-member (a public room seen from outside) has none.
    assert (await room_of(client, carol, room))["unread_mentions"] == 0
    await send(client, alice, room, "no mention")
    again = await send(client, alice, room, "@bob again")
    listed = await get_json(client, bob, "/api/v1/rooms")
    assert [r["unread_mentions"] for r in listed["items"]] == [2]
    await mark_read(client, bob, room, hello["seq"])
    assert (await room_of(client, bob, room))["unread_mentions"] == 1
    await mark_read(client, bob, room, again["seq"])
    assert (await room_of(client, bob, room))["unread_mentions"] == 0
    assert mentioned((await messages_by_id(client, bob, room))[hello["id"]]) == ([bob.id], False)


async def test_a_mention_of_someone_not_in_the_room_is_plain_text(client, alice, bob):
    room = await create_room(client, alice)
    message = await send(client, alice, room, "@bob @nobody bob@example.com")
    assert mentioned(message) == ([], False)
    assert (await room_of(client, bob, room))["unread_mentions"] == 0
    await join(client, bob, room)
    await leave(client, bob, room)  # was a member, is no more
    after = await send(client, alice, room, "@bob?")
    assert mentioned(after) == ([], False)
    assert (await get_json(client, bob, MINE))["items"] == []


async def test_room_mentions_count_for_managers_or_in_small_rooms(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    small = await send(client, bob, room, "@room hello")
    assert mentioned(small) == ([], True)
    others = [await signup(client, f"user{i:02d}") for i in range(19)]
    for other in others[:18]:
        await join(client, other, room)
    at_twenty = await send(client, bob, room, "@room, twenty of us")
    assert mentioned(at_twenty) == ([], True)
    await join(client, others[18], room)  # 21 members
    by_member = await send(client, bob, room, "@room: a member, 21 of us")
    assert mentioned(by_member) == ([], False)
    by_owner = await send(client, alice, room, "@room, and @bob by name too")
    assert mentioned(by_owner) == ([bob.id], True)
    # Bob's own @room messages are not his mentions; the owner's counts once for him.
    assert (await room_of(client, bob, room))["unread_mentions"] == 1
    newest = others[18]
    # The newest member's marker starts at 0: every @room that counted is unread.
    assert (await room_of(client, newest, room))["unread_mentions"] == 3
    await mark_read(client, newest, room, at_twenty["seq"])
    assert (await room_of(client, newest, room))["unread_mentions"] == 1


async def test_my_mentions_newest_first_paged_in_the_rooms_i_am_in(client, alice, bob):
    first = await create_room(client, alice, name="first")
    second = await create_room(client, alice, name="second")
    for room in (first, second):
        await join(client, bob, room)
    expected = []
    for i in range(3):
        expected.append(await send(client, alice, first, f"@bob {i}"))
        expected.append(await send(client, alice, second, f"hey @bob {i}"))
        await send(client, alice, first, "nothing for bob")
        await send(client, bob, first, "@bob talking to myself, and @room")
    expected.append(await send(client, alice, second, "@room"))
    seen, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await get_json(client, bob, MINE + query)
        assert len(page["items"]) <= 3
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [m["id"] for m in seen] == [m["id"] for m in reversed(expected)]
    assert seen[0] == (await messages_by_id(client, bob, second))[expected[-1]["id"]]
    await leave(client, bob, second)
    left = await get_json(client, bob, MINE)
    assert [m["id"] for m in left["items"]] == [
        m["id"] for m in reversed(expected) if m["room_id"] == first["id"]
    ]


async def test_an_edit_recomputes_mentions_and_reports_the_new(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice)
    for member in (bob, carol):
        await join(client, member, room)
    message = await send(client, alice, room, "hello @bob")
    db = client.app[keys.DB]

    async def edit_in_db(body: str) -> Mentions:
        edited = await db.edit_message(room["id"], message["id"], alice.id, body, find(body))
        assert edited is not None
        return edited.newly_mentioned

    assert await edit_in_db("hello @bob and @carol") == Mentions((carol.id,), False)
    assert await edit_in_db("hello @carol, @bob and @room") == Mentions((), True)
    assert await edit_in_db("@carol @bob @room") == Mentions()  # nobody is told twice
    for member in (bob, carol):
        assert (await room_of(client, member, room))["unread_mentions"] == 1
    # Over REST: a removal is one; the edited message reads as it is now.
    edited = await edit(client, alice, message, "only @carol now")
    assert mentioned(edited) == ([carol.id], False)
    assert (await room_of(client, bob, room))["unread_mentions"] == 0
    assert (await room_of(client, carol, room))["unread_mentions"] == 1
    assert (await get_json(client, bob, MINE))["items"] == []
    assert [m["id"] for m in (await get_json(client, carol, MINE))["items"]] == [message["id"]]
    assert await edit_in_db("@bob is back") == Mentions((bob.id,), False)
    assert (await room_of(client, carol, room))["unread_mentions"] == 0


async def test_a_deleted_message_mentions_nobody(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    message = await send(client, alice, room, "@bob and @room")
    assert (await room_of(client, bob, room))["unread_mentions"] == 1
    await delete(client, alice, message)
    tombstone = (await messages_by_id(client, bob, room))[message["id"]]
    assert tombstone["deleted"] is True and mentioned(tombstone) == ([], False)
    assert (await room_of(client, bob, room))["unread_mentions"] == 0
    assert (await get_json(client, bob, MINE))["items"] == []


async def test_mentions_are_replayed_as_in_history(client, alice, bob):
    room = await create_room(client, alice)
    await join(client, bob, room)
    named = await send(client, alice, room, "@bob look")
    everyone = await send(client, alice, room, "@room")
    edited = await send(client, alice, room, "draft")
    await edit(client, alice, edited, "now for @bob")
    read = await messages_by_id(client, bob, room)
    assert [mentioned(read[m["id"]]) for m in (named, everyone, edited)] == [
        ([bob.id], False),
        ([], True),
        ([bob.id], False),
    ]
    assert await replayed_messages(client, bob, room) == read
