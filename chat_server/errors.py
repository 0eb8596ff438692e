"""The one error family, the one renderer of it, and request-body helpers.

Handlers raise `ApiError`s; `render_error` (called by the request middleware
in observability.py) turns them, aiohttp's own HTTP exceptions, malformed
bodies and database outages into the contract's error shape. Nothing a
client sends may surface as a 500.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.web_protocol import RequestPayloadError

from .engines import DatabaseUnavailable, StorageFull

log = logging.getLogger("chat_server")

# Largest JSON body we accept (API.md: JSON body over 1 MiB is 413).
MAX_JSON_BYTES = 1024 * 1024
# Largest integer we accept anywhere: both engines store ids and seqs as 64-bit.
MAX_INT = 2**63 - 1


class ApiError(Exception):
    status = 500
    code = "internal"
    default_message = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(ApiError):
    status, code, default_message = 400, "invalid_request", "invalid request"

    @classmethod
    def fields(cls, fields: dict[str, str]) -> InvalidRequest:
        names = ", ".join(sorted(fields))
        return cls(f"invalid fields: {names}", details={"fields": fields})


class Unauthorized(ApiError):
    status, code, default_message = 401, "unauthorized", "authentication required"


class Forbidden(ApiError):
    status, code, default_message = 403, "forbidden", "not allowed"


class NotFound(ApiError):
    status, code, default_message = 404, "not_found", "not found"


class MethodNotAllowed(ApiError):
    status, code, default_message = 405, "method_not_allowed", "method not allowed"


class Conflict(ApiError):
    status, code, default_message = 409, "conflict", "conflict"


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "payload_too_large", "payload too large"


class RangeNotSatisfiable(ApiError):
    status, code, default_message = 416, "range_not_satisfiable", "range not satisfiable"


class UnsupportedMediaType(ApiError):
    status, code, default_message = 415, "unsupported_media_type", "unsupported content type"


class RateLimited(ApiError):
    status, code, default_message = 429, "rate_limited", "too many requests"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(self.retry_after)})


class InsufficientStorage(ApiError):
    status, code, default_message = 507, "insufficient_storage", "not enough storage"


class Unavailable(ApiError):
    status, code, default_message = 503, "unavailable", "service temporarily unavailable"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


_CODE_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        RangeNotSatisfiable,
        RateLimited,
        Unavailable,
    )
}


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status, headers=error.headers)
    return response


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    cls = _CODE_BY_STATUS.get(exc.status)
    if cls is None or cls is RateLimited:
        return InvalidRequest(exc.reason) if exc.status < 500 else ApiError()
    error = cls(exc.reason) if cls is not Unavailable else Unavailable()
    if exc.status == 405:
        allow = exc.headers.get("Allow")
        if allow:
            error.headers["Allow"] = allow
    return error


# What the HTTP parser refused, most specific first, in words that quote nothing
# of the request: aiohttp's own messages quote the offending bytes (a header
# line with its token, say).
_MALFORMED: tuple[tuple[type[BaseException], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (BadStatusLine, "bad request line"),
    (InvalidURLError, "bad request target"),
    (InvalidHeader, "bad header"),
    (PayloadEncodingError, "bad body encoding"),
    (RequestPayloadError, "bad body encoding"),
    (HttpProcessingError, "bad headers"),
)


def malformed_request(exc: BaseException | None) -> InvalidRequest:
    """The 400 for a request (or body) that aiohttp could not parse."""
    what = next((what for kind, what in _MALFORMED if isinstance(exc, kind)), None)
    return InvalidRequest(f"malformed request: {what}" if what else "malformed request")


def _client_gone(exc: Exception, request: web.Request) -> bool:
    """True when reading the request failed because the client hung up."""
    transport = request.transport
    return isinstance(exc, ConnectionError) and (transport is None or transport.is_closing())


def is_database_outage(exc: BaseException) -> bool:
    """True for errors meaning the database is unreachable, not that a query is wrong."""
    return isinstance(exc, DatabaseUnavailable)


def render_error(exc: Exception, request: web.Request) -> web.Response | None:
    """The contract's error response for what a handler raised (None: not an error).

    The one renderer: ApiErrors, aiohttp's own HTTP errors (404, 405, 413, ...),
    malformed bodies, clients hanging up and database outages all end up in
    the error shape; any other exception is logged and becomes a 500 that
    reveals nothing.
    """
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, web.HTTPException):
        return None if exc.status < 400 else error_response(_from_http_exception(exc))
    if isinstance(exc, HttpProcessingError | RequestPayloadError):  # found while reading
        return error_response(malformed_request(exc))
    if _client_gone(exc, request):  # nobody to answer; aiohttp drops the response
        return error_response(InvalidRequest("the connection closed mid-request"))
    if isinstance(exc, StorageFull):
        log.warning("database storage full: a write failed for lack of space")
        return error_response(Unavailable("database storage full"))
    if is_database_outage(exc):
        log.warning("database unavailable: %s", exc)  # the driver's exception type
        return error_response(Unavailable("database unavailable"))
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(ApiError())


# --- request bodies -------------------------------------------------------------


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or the contract's 400/413/415."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("expected Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge("JSON body over 1 MiB")
    raw = await request.content.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise PayloadTooLarge("JSON body over 1 MiB")
    return parse_json_object(raw)


def parse_json_object(raw: bytes | str, what: str = "body") -> dict[str, Any]:
    """A JSON object from a request body or a WebSocket frame, else a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return data


class Validator:
    """Checks fields of a JSON object or query string, collecting every problem.

    Each getter returns the cleaned value (or None when absent and optional) and
    records a reason for a bad field; `check()` raises one 400 naming them all.
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

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        min_len: int = 0,
        max_len: int,
        strip: bool = False,
        pattern: re.Pattern[str] | None = None,
        reason: str | None = None,
    ) -> str | None:
        if name not in self.source:
            if required:
                self._fail(name, "required")
            return None
        value = self.source[name]
        explain = reason or f"a string of {min_len}-{max_len} characters"
        if not isinstance(value, str) or len(value) > max_len:
            self._fail(name, explain)
            return None
        if strip:
            value = value.strip()
        if not is_storable_text(value):
            self._fail(name, "must be valid Unicode text without NUL characters")
            return None
        if len(value) < min_len or (pattern and not pattern.fullmatch(value)):
            self._fail(name, explain)
            return None
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        minimum: int = 1,
        maximum: int = MAX_INT,
        nullable: bool = False,
    ) -> int | None:
        if name not in self.source or (nullable and self.source[name] is None):
            if required and name not in self.source:
                self._fail(name, "required")
            return None
        value = self.source[name]
        if self.query and isinstance(value, str):
            value = _query_int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(name, f"an integer {minimum}-{maximum}")
            return None
        if not minimum <= value <= maximum:
            self._fail(name, f"an integer {minimum}-{maximum}")
            return None
        return value

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
        if name not in self.source:
            if required:
                self._fail(name, "required")
            return None
        value = self.source[name]
        if value not in allowed:
            self._fail(name, "one of " + ", ".join(allowed))
            return None
        return value

    def id_list(self, name: str, *, max_items: int) -> list[int]:
        if name not in self.source:
            return []
        value = self.source[name]
        if (
            not isinstance(value, list)
            or len(value) > max_items
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INT for v in value
            )
        ):
            self._fail(name, f"a list of at most {max_items} ids")
            return []
        return list(dict.fromkeys(value))


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


def path_id(request: web.Request, name: str) -> int:
    """An id from the URL path; anything but a positive 64-bit integer is 404."""
    text = request.match_info[name]
    if not is_ascii_digits(text) or not 1 <= int(text) <= MAX_INT:
        raise NotFound()
    return int(text)


def is_ascii_digits(text: str) -> bool:
    """True for 0-9 only: str.isdigit() also accepts digits like "²" that int() refuses."""
    return text.isascii() and text.isdigit()
