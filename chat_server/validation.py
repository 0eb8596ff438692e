"""What a client sends, checked: JSON bodies, fields of bodies and query strings, path ids.

Everything here raises the contract's 400 (`invalid_request` naming each bad
field), 404 (a path id that cannot exist), 413 or 415; errors.py renders them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal, overload

from aiohttp import web

from .errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType

# Largest JSON body we accept (API.md: JSON body over 1 MiB is 413).
MAX_JSON_BYTES = 1024 * 1024
# Largest integer we accept anywhere: both engines store ids and seqs as 64-bit.
MAX_INT = 2**63 - 1
# What trimming removes: whitespace as JSON Schema's (ECMAScript's) `\s` has it, so
# a value that the OpenAPI document's pattern "\S" accepts is never blank here
# (Python's own str.strip() also removes U+001C-U+001F and U+0085).
BLANK = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


# --- request bodies ----------------------------------------------------------------


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or the contract's 400/413/415."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("expected Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge("JSON body over 1 MiB")
    # Reads until the body ends: one read returns only what has arrived so far.
    # Counting what was read, not the Content-Length, also bounds a chunked body.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise PayloadTooLarge("JSON body over 1 MiB")
        chunks.append(chunk)
    return parse_json_object(b"".join(chunks))


def parse_json_object(raw: bytes | str, what: str = "body") -> dict[str, Any]:
    """A JSON object from a request body or a WebSocket frame, else a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return data


# --- fields --------------------------------------------------------------------------


class Validator:
    """Checks fields of a JSON object or query string, collecting every problem.

    Each getter returns the cleaned value and records a reason for a bad field;
    `check()` raises one 400 naming them all. An optional field that is absent
    or bad gives None. A required one is typed as always present: when it is
    absent or bad the getter returns a placeholder ("" or 0) that `check()`
    keeps from ever being used.
    """

    def __init__(self, source: Mapping[str, Any], *, query: bool = False) -> None:
        self.source = source
        self.query = query  # query strings carry numbers as text
        self.errors: dict[str, str] = {}

    def _fail(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, reason)

    def check(self) -> None:
        if self.errors:
            raise InvalidRequest.fields(self.errors)

    @overload
    def string(
        self,
        name: str,
        *,
        required: Literal[True],
        min_len: int = ...,
        max_len: int,
        strip: bool = ...,
        max_after_strip: bool = ...,
        pattern: re.Pattern[str] | None = ...,
        reason: str | None = ...,
    ) -> str: ...

    @overload
    def string(
        self,
        name: str,
        *,
        required: bool = ...,
        min_len: int = ...,
        max_len: int,
        strip: bool = ...,
        max_after_strip: bool = ...,
        pattern: re.Pattern[str] | None = ...,
        reason: str | None = ...,
    ) -> str | None: ...

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        min_len: int = 0,
        max_len: int,
        strip: bool = False,
        max_after_strip: bool = False,
        pattern: re.Pattern[str] | None = None,
        reason: str | None = None,
    ) -> str | None:
        """A string field, trimmed if `strip` or `max_after_strip` asks.

        min_len and the pattern apply to the trimmed value; max_len to the value as
        sent, or with `max_after_strip` to the trimmed value too (API.md's message
        body: "1-4000 characters after trimming").
        """
        missing = "" if required else None
        if name not in self.source:
            if required:
                self._fail(name, "required")
            return missing
        value = self.source[name]
        explain = reason or f"a string of {min_len}-{max_len} characters"
        if not isinstance(value, str) or (len(value) > max_len and not max_after_strip):
            self._fail(name, explain)
            return missing
        if strip or max_after_strip:
            value = value.strip(BLANK)
        if not is_storable_text(value):
            self._fail(name, "must be valid Unicode text without NUL characters")
            return missing
        if not min_len <= len(value) <= max_len or (pattern and not pattern.fullmatch(value)):
            self._fail(name, explain)
            return missing
        return value

    @overload
    def integer(
        self,
        name: str,
        *,
        required: Literal[True],
        minimum: int = ...,
        maximum: int = ...,
        nullable: Literal[False] = ...,
    ) -> int: ...

    @overload
    def integer(
        self,
        name: str,
        *,
        required: bool = ...,
        minimum: int = ...,
        maximum: int = ...,
        nullable: bool = ...,
    ) -> int | None: ...

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        minimum: int = 1,
        maximum: int = MAX_INT,
        nullable: bool = False,
    ) -> int | None:
        missing = 0 if required and not nullable else None
        if name not in self.source or (nullable and self.source[name] is None):
            if required and name not in self.source:
                self._fail(name, "required")
            return missing
        value = self.source[name]
        if self.query and isinstance(value, str):
            value = _query_int(value)
        number = json_int(value)
        if number is None or not minimum <= number <= maximum:
            self._fail(name, f"an integer {minimum}-{maximum}")
            return missing
        return number

    @overload
    def choice(self, name: str, allowed: tuple[str, ...], *, required: Literal[True]) -> str: ...

    @overload
    def choice(
        self, name: str, allowed: tuple[str, ...], *, required: bool = ...
    ) -> str | None: ...

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
        missing = "" if required else None
        if name not in self.source:
            if required:
                self._fail(name, "required")
            return missing
        value = self.source[name]
        if value not in allowed:
            self._fail(name, "one of " + ", ".join(allowed))
            return missing
        return value

    def id_list(self, name: str, *, max_items: int) -> list[int]:
        if name not in self.source:
            return []
        value = self.source[name]
        ids = [json_int(item) for item in value] if isinstance(value, list) else [None]
        if len(ids) > max_items or not all(i is not None and 1 <= i <= MAX_INT for i in ids):
            self._fail(name, f"a list of at most {max_items} ids")
            return []
        return list(dict.fromkeys(i for i in ids if i is not None))


def json_int(value: Any) -> int | None:
    """An integer from JSON, where whole-number floats (`1.0`) are integers too.

    JSON Schema's `type: integer` (the OpenAPI document's) accepts them, so
    generated clients may send them. Booleans are not numbers here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _query_int(text: str) -> int | str:
    return int(text) if re.fullmatch(r"-?\d{1,20}", text) else text


def is_storable_text(value: str) -> bool:
    """Both engines store UTF-8 text; NUL and lone surrogates cannot be stored."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- path ids ------------------------------------------------------------------------


def path_id(request: web.Request, name: str) -> int:
    """An id from the URL path; anything but a positive 64-bit integer is 404."""
    text = request.match_info[name]
    if not is_ascii_digits(text) or not 1 <= int(text) <= MAX_INT:
        raise NotFound()
    return int(text)


def is_ascii_digits(text: str) -> bool:
    """True for 0-9 only: str.isdigit() also accepts digits like "²" that int() refuses."""
    return text.isascii() and text.isdigit()
