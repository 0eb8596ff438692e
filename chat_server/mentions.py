"""Mentions (API.md "Conversation"): finding `@username` and `@room` in a body.

A body is scanned here, in Python, before the database is asked anything:
a body without `@` costs one `in` test, and a send that names nobody stays
on the ordinary send path. What the scan finds is only *written*: the names
become user ids inside the send's (or edit's) transaction, against the
room's members at that moment (db.py `_resolve_mentions`), where the rule of
`@room` is applied too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `@` at a word start (not inside `a@b.c`, `x@@y` or `..@z`), then username characters.
MENTION = re.compile(r"(?<![\w.@-])@([A-Za-z0-9_.-]+)")
USERNAME_LENGTH = range(3, 33)  # auth.USERNAME: 3-32 characters
# Punctuation that may end a sentence right after a name (`@bob.`, `@bob-`), though
# usernames may end in it: the longer reading wins when it names a member.
TRAILING = ".-"
ROOM = "room"
# `@room` counts for anyone in a room this small, and for its owner and admins in any.
ROOM_MENTION_MAX_MEMBERS = 20
# Distinct names looked up per body (a 4,000-character body could spell ~1,300).
MAX_NAMES = 50


@dataclass(frozen=True, slots=True)
class Written:
    """The mentions a body spells out, before they are checked against the room.

    `names` holds, per distinct `@word`, its possible usernames, longest first.
    """

    names: tuple[tuple[str, ...], ...] = ()
    room: bool = False

    def __bool__(self) -> bool:
        return self.room or bool(self.names)

    def usernames(self) -> list[str]:
        return sorted({name for readings in self.names for name in readings})

    def resolve(self, members: dict[str, int]) -> tuple[int, ...]:
        """The user ids named, given {username: user id} of the members among `usernames()`."""
        named = set()
        for readings in self.names:
            for name in readings:
                if name in members:
                    named.add(members[name])
                    break
        return tuple(sorted(named))


NOTHING_WRITTEN = Written()


def find(body: str) -> Written:
    """The `@username`s (case-insensitive) and `@room` written in `body`."""
    if "@" not in body:
        return NOTHING_WRITTEN
    names: dict[str, tuple[str, ...]] = {}
    room = False
    for match in MENTION.finditer(body):
        word = match.group(1).lower()
        short = word.rstrip(TRAILING)
        if short == ROOM:
            room = True
            continue
        if word in names or len(names) == MAX_NAMES:
            continue
        readings = tuple(dict.fromkeys(r for r in (word, short) if len(r) in USERNAME_LENGTH))
        if readings:
            names[word] = readings
    return Written(tuple(names.values()), room)
