"""The one error family and the one renderer of it.

Handlers raise `ApiError`s; `render_error` (called by the request middleware
in observability.py) turns them, aiohttp's own HTTP exceptions, malformed
bodies and database outages into the contract's error shape. Nothing a
client sends may surface as a 500.
"""

from __future__ import annotations

import logging
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
