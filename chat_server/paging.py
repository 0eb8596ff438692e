"""List paging: the `limit` parameter and opaque cursors (API.md "Conventions")."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar, overload

from .validation import MAX_INT, Validator, is_storable_text

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


class Listed(Protocol):
    def to_json(self) -> dict[str, Any]: ...


L = TypeVar("L", bound=Listed)


def page_limit(v: Validator) -> int:
    """The `limit` query parameter: default 50, 1-100."""
    limit = v.integer("limit", minimum=1, maximum=MAX_LIMIT)
    return DEFAULT_LIMIT if limit is None else limit


def encode_cursor(position: str | int) -> str:
    return base64.urlsafe_b64encode(str(position).encode()).decode().rstrip("=")


@overload
def decode_cursor(v: Validator, *, numeric: Literal[True]) -> int | None: ...


@overload
def decode_cursor(v: Validator, *, numeric: Literal[False]) -> str | None: ...


def decode_cursor(v: Validator, *, numeric: bool) -> str | int | None:
    """The `cursor` query parameter as the position it encodes, or None on the first page."""
    raw = v.source.get("cursor")
    if raw is None:
        return None
    position: str | int | None
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
        position = int(text) if numeric else text
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = None
    # A text position goes to the database as a parameter: PostgreSQL refuses NUL in text.
    # An empty cursor was never issued (the first page has none), so it is refused too.
    if position in (None, "") or not (
        0 <= position <= MAX_INT if isinstance(position, int) else is_storable_text(position)
    ):
        v.errors.setdefault("cursor", "not a cursor returned by this endpoint")
        return None
    return position


def page(items: list[L], limit: int, position_of: Callable[[L], str | int]) -> dict[str, Any]:
    """`{"items", "next_cursor"}` from up to `limit + 1` fetched items."""
    more = len(items) > limit
    items = items[:limit]
    cursor = encode_cursor(position_of(items[-1])) if more and items else None
    return {"items": [item.to_json() for item in items], "next_cursor": cursor}
