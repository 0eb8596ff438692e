"""The reaction emoji rule (chat_server/emoji.py): one emoji grapheme or `:name:`."""

from __future__ import annotations

import pytest

from chat_server.emoji import is_pictographic, is_reaction

VALID = [
    "👍",
    "❤️",  # with its presentation selector
    "❤",  # text-default, without it
    "👍🏽",  # skin tone
    "👨‍👩‍👧‍👦",  # ZWJ family
    "🏃🏽‍♀️",  # skin tone, ZWJ, gender, selector
    "❤️‍🔥",
    "🏳️‍🌈",
    "🇫🇷",  # flag
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",  # subdivision flag (tags)
    "1️⃣",  # keycap
    "#⃣",  # keycap without the selector
    ":+1:",
    ":party_parrot:",
    ":a:",
    ":" + "x" * 32 + ":",
    "©",
]
INVALID = [
    "",
    "ok",
    "1",
    "👍👍",  # two emoji
    "🇫🇷🇩🇪",  # two flags
    "🇫",  # half a flag
    ":Bad:",
    "::",
    ":" + "x" * 33 + ":",
    ":a b:",
    "thumbsup",
    "👍 ",
    "\u200d",
    "👍\u200d",  # a dangling joiner
    "\u200d👍",
    "👍🏽🏽",  # two modifiers
    "🏽",  # a modifier alone
    "\ufe0f",
    "a\u20e3",  # no keycap base
    "👨‍👩‍👧‍👦‍👦",  # five joined
    "🏴\U000e007f",  # a tag flag without tags
    "é",
]


@pytest.mark.parametrize("text", VALID)
def test_one_emoji_or_custom_name_is_a_reaction(text: str) -> None:
    assert is_reaction(text)


@pytest.mark.parametrize("text", INVALID)
def test_anything_else_is_not(text: str) -> None:
    assert not is_reaction(text)


def test_pictographic_ranges_edges() -> None:
    assert is_pictographic(0x1F600) and is_pictographic(0x00A9) and is_pictographic(0x1FAFF)
    assert not is_pictographic(ord("a")) and not is_pictographic(0x1F3FB)  # a skin tone
    assert not is_pictographic(0x1F1E6)  # a regional indicator alone
