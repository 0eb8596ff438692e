"""The reaction emoji rule (chat_server/emoji.py): one emoji grapheme or `:name:`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chat_server.emoji import PATTERN, is_reaction

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


def test_the_openapi_pattern_is_the_rule() -> None:
    parameter = json.loads(
        (Path(__file__).parent.parent / "chat_server" / "openapi.json").read_text()
    )["components"]["parameters"]["Emoji"]
    assert parameter["schema"]["pattern"] == PATTERN
    for text in VALID:
        assert re.search(PATTERN, text)
    for text in INVALID:
        assert not re.search(PATTERN, text)
