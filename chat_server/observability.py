"""Logging setup, request ids and access logs, Prometheus metrics, and the
connection handling that keeps requests aiohttp cannot parse out of the log.

Logs name the route template (never the raw path with ids or query), the
user id, status and latency. Tokens, passwords and message bodies are never
logged anywhere in the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from . import keys
from .errors import ApiError, error_response, malformed_request, render_error

access_log = logging.getLogger("chat_server.access")
REQUEST_ID_HEADER = "X-Request-ID"
# An incoming X-Request-ID is echoed only if it is this tame (it ends up in logs).
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The status logged (never sent) when a handler is cancelled because its client
# hung up (aiohttp's handler_cancellation), as nginx logs it.
CLIENT_CLOSED = 499


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra` fields of the record."""

    RESERVED = frozenset([*vars(logging.makeLogRecord({})), "message", "asctime"])

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines; `extra` fields are appended as key=value."""

    RESERVED = JsonFormatter.RESERVED

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={v}" for k, v in vars(record).items() if k not in self.RESERVED]
        return " ".join([line, *extra])


def setup_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.formatter = (
        JsonFormatter()
        if log_format == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # asyncpg logs statements with their parameters at DEBUG (message bodies,
    # password hashes): never let it, whatever the level asked for.
    logging.getLogger("asyncpg").setLevel(max(logging.INFO, root.level))
    logging.Formatter.converter = time.gmtime


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "chat_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "chat_http_request_seconds", "HTTP request latency", ["route"], registry=r
        )
        self.websockets_open = Gauge("chat_websockets_open", "Open WebSockets", registry=r)
        self.events_in = Counter("chat_ws_frames_in", "WebSocket frames received", registry=r)
        self.events_out = Counter(
            "chat_events_out", "Events queued to WebSocket connections", registry=r
        )
        self.messages_persisted = Counter(
            "chat_messages_persisted", "Messages committed by this process", registry=r
        )
        self.relay_published = Counter("chat_relay_published", "Relay messages sent", registry=r)
        self.relay_received = Counter("chat_relay_received", "Relay messages received", registry=r)
        self.relay_dropped = Counter(
            "chat_relay_dropped",
            "Relay notifications dropped, oldest first, when the outbox was full"
            " (the room stream makes each one recoverable)",
            registry=r,
        )
        self.relay_lag = Histogram(
            "chat_relay_lag_seconds",
            "Time from publish on one process to receipt on another",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.relay_connected = Gauge("chat_relay_connected", "1 while Redis answers", registry=r)
        self.relay_bytes_queued = Gauge(
            "chat_relay_bytes_queued", "Bytes of relay notifications waiting to go out", registry=r
        )
        self.relay_stalls = Counter(
            "chat_relay_stalls",
            "Switches to polling because Redis stopped answering or echoing the heartbeat",
            registry=r,
        )
        self.stream_fills = Counter(
            "chat_stream_fills",
            "Room stream reads by a connection, by cause (gap, resume, join, poll, hold, update)",
            ["cause"],
            registry=r,
        )
        self.resumes = Counter("chat_resumes", "Resume outcomes per room", ["outcome"], registry=r)
        self.slow_consumers = Counter(
            "chat_slow_consumer_disconnects", "Connections closed with 1013", registry=r
        )
        self.rate_limited = Counter(
            "chat_rate_limited", "Requests refused by a rate limit", ["limit"], registry=r
        )
        self.login_failures = Counter("chat_login_failures", "Failed logins", registry=r)
        self.db_pool_in_use = Gauge(
            "chat_db_connections_in_use", "Database connections in use", registry=r
        )
        self.outbound_calls = Counter(
            "chat_outbound_calls",
            "Outbound HTTP calls (push, webhooks) by outcome: answered, refused,"
            " timeout, connect, tls, too_large, http",
            ["outcome"],
            registry=r,
        )
        self.push_messages = Counter(
            "chat_push_messages", "New messages whose pushes were decided", registry=r
        )
        self.pushes_sent = Counter(
            "chat_pushes_sent", "Web Pushes a push service accepted", registry=r
        )
        self.push_failures = Counter(
            "chat_push_failures",
            "Web Push attempts that failed, by cause (timeout, connect, tls, too_large, http,"
            " status_429, status_5xx, rejected, refused, queue_full)",
            ["cause"],
            registry=r,
        )
        self.push_subscriptions_removed = Counter(
            "chat_push_subscriptions_removed",
            "Push subscriptions removed because their push service answered 404 or 410",
            registry=r,
        )
        self.push_queue_depth = Gauge(
            "chat_push_queue_depth", "Messages and pushes waiting in the push queue", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(request: web.Request) -> str:
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    return info.canonical


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    return incoming if REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Around every request: its id in and out, the contract's error shape for
    whatever the handler raised (errors.render_error), one access-log line and
    the HTTP metrics.

    One middleware, not three: a WebSocket keeps its middleware frames
    suspended for as long as it is open.
    """
    request_id = _request_id(request)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except Exception as exc:
            rendered = render_error(exc, request)
            if rendered is None:  # a redirect: aiohttp sends it
                raise
            response = rendered
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_of(request)
        metrics = request.app[keys.METRICS]
        metrics.http_requests.labels(request.method, route, str(status)).inc()
        metrics.http_latency.labels(route).observe(elapsed)
        access_log.info(
            "%s %s %s",
            request.method,
            route,
            status,
            extra={
                "request_id": request_id,
                "user_id": request.get(keys.USER_ID),
                "method": request.method,
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
            },
        )


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[keys.METRICS]
    db = request.app[keys.DB]
    metrics.db_pool_in_use.set(db.connections_in_use())
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- requests aiohttp cannot parse -----------------------------------------------------
# They never reach the middleware: aiohttp's connection handler answers them
# itself, in text/plain quoting the offending bytes, and logs them at ERROR with
# a traceback whose message quotes them too (a header line with its token).


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The log of aiohttp's connection handlers (`aiohttp.server`), safe for client input.

    A record about a request the parser refused becomes one line naming the kind
    of fault, at INFO at most (client input is no error of the server); faults
    of the server keep their traceback. create_app() installs it for every runner.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = _exception_of(kwargs.get("exc_info"))
        if not isinstance(exc, HttpProcessingError):
            super().log(level, msg, *args, **kwargs)
            return
        kwargs.pop("exc_info")
        text = str(msg) % args if args else str(msg)  # aiohttp's words and the peer's address
        refused = malformed_request(exc).message
        super().log(min(level, logging.INFO), "%s: %s", text, refused, **kwargs)


def _exception_of(exc_info: object) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):  # (type, value, traceback), value None when no exception
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return sys.exc_info()[1] if exc_info else None


PROTOCOL_LOG = ProtocolLog(logging.getLogger("aiohttp.server"))


class _ContractErrorsHandler(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in the contract's shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs (through ProtocolLog) and refuses if a response has begun.
        super().handle_error(request, status, exc, message)
        response = error_response(malformed_request(exc) if status < 500 else ApiError())
        response.force_close()
        return response


class _ContractErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        # As web.Server.__call__, with the handler class aiohttp offers no option for.
        return _ContractErrorsHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer requests aiohttp cannot parse in the
    contract's JSON error shape instead of aiohttp's text/plain echo of them."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ContractErrorsServer  # aiohttp builds it; only __call__ differs
        return server


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    announce: Callable[[str], None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Serves `app` until SIGINT or SIGTERM: web.run_app on `AppRunner` (run_app
    takes no runner), then cleans up the app and the loop as run_app does."""
    main = loop.create_task(_serve(app, host, port, announce))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()  # its `finally` shuts the app down
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(main, *leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(
    app: web.Application, host: str, port: int, announce: Callable[[str], None]
) -> None:
    # run_app's defaults: SIGINT/SIGTERM raise GracefulExit, idle keep-alive 75 s.
    runner = AppRunner(app, handle_signals=True, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        announce(f"======== Running on {site.name} ========")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
