"""List paging (paging.py): the `limit` parameter, opaque cursors, and pages."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest

from chat_server.errors import InvalidRequest
from chat_server.paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    page,
    page_limit,
)
from chat_server.validation import MAX_INT, Validator


def query(**params: str) -> Validator:
    return Validator(params, query=True)


def raw_cursor(text: bytes) -> str:
    """A cursor as the server would write one, around arbitrary bytes."""
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def rejected_fields(v: Validator) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        v.check()
    assert caught.value.code == "invalid_request"
    assert caught.value.details is not None
    return caught.value.details["fields"]


# --- limit ---------------------------------------------------------------------------


def test_limit_defaults_to_50() -> None:
    v = query()
    assert page_limit(v) == DEFAULT_LIMIT == 50
    v.check()


@pytest.mark.parametrize("text, expected", [("1", 1), ("50", 50), ("100", MAX_LIMIT)])
def test_limit_within_bounds(text: str, expected: int) -> None:
    v = query(limit=text)
    assert page_limit(v) == expected
    v.check()


@pytest.mark.parametrize("text", ["0", "101", "-1", "1.5", "ten", "", " 5", "1e2", "9" * 30])
def test_limit_out_of_bounds_or_not_an_integer_is_invalid(text: str) -> None:
    v = query(limit=text)
    page_limit(v)
    assert rejected_fields(v) == {"limit": "an integer 1-100"}


# --- cursors -------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 7, 1234567890, MAX_INT])
def test_numeric_cursor_round_trip(position: int) -> None:
    v = query(cursor=encode_cursor(position))
    assert decode_cursor(v, numeric=True) == position
    v.check()


@pytest.mark.parametrize("position", ["a", "ab", "abc", "alice", "zoë.o_o-", "名前", "x" * 64])
def test_text_cursor_round_trip(position: str) -> None:
    cursor = encode_cursor(position)
    v = query(cursor=cursor)
    assert decode_cursor(v, numeric=False) == position
    v.check()


@pytest.mark.parametrize("position", [MAX_INT, "??>>~~", "名前", "a" * 100])
def test_cursor_is_url_safe_without_padding(position: str | int) -> None:
    cursor = encode_cursor(position)
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_no_cursor_is_the_first_page() -> None:
    v = query()
    assert decode_cursor(v, numeric=True) is None
    assert decode_cursor(v, numeric=False) is None
    v.check()


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",  # not base64 at all
        "a",  # a length no base64 text has
        "YW Jj",  # whitespace inside
        "YWJj==x",  # data after padding
        raw_cursor(b"\xff\xfe"),  # not UTF-8
        raw_cursor(b"ab\x00c"),  # NUL: no database stores it in text
    ],
)
@pytest.mark.parametrize("numeric", [True, False])
def test_malformed_cursor_is_invalid(cursor: str, numeric: bool) -> None:
    v = query(cursor=cursor)
    assert decode_cursor(v, numeric=numeric) is None
    assert rejected_fields(v) == {"cursor": "not a cursor returned by this endpoint"}


@pytest.mark.parametrize(
    "text", [b"alice", b"", b"-1", b"1.5", str(MAX_INT + 1).encode(), b"9" * 5000]
)
def test_numeric_cursor_must_hold_a_64_bit_position(text: bytes) -> None:
    v = query(cursor=raw_cursor(text))
    assert decode_cursor(v, numeric=True) is None
    assert rejected_fields(v) == {"cursor": "not a cursor returned by this endpoint"}


def test_cursor_error_sits_beside_other_field_errors() -> None:
    v = query(limit="0", cursor="!!!!")
    page_limit(v)
    decode_cursor(v, numeric=True)
    assert set(rejected_fields(v)) == {"limit", "cursor"}


# --- pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


def by_id(item: Item) -> int:
    return item.id


def test_page_with_more_items_has_a_cursor_to_its_last_item() -> None:
    fetched = [Item(i) for i in (3, 5, 8, 13)]  # limit + 1 fetched: there is more
    result = page(fetched, 3, by_id)
    assert result["items"] == [{"id": 3}, {"id": 5}, {"id": 8}]
    v = query(cursor=result["next_cursor"])
    assert decode_cursor(v, numeric=True) == 8  # the next page starts after the last shown


@pytest.mark.parametrize("count", [0, 1, 3])
def test_last_page_has_no_cursor(count: int) -> None:
    result = page([Item(i) for i in range(1, count + 1)], 3, by_id)
    assert result == {"items": [{"id": i} for i in range(1, count + 1)], "next_cursor": None}
