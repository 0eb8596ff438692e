"""Logging setup, request ids and access logs, and Prometheus metrics.

Logs name the route template (never the raw path with ids or query), the
user id, status and latency. Tokens, passwords and message bodies are never
logged anywhere in the server.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from . import keys
from .errors import render_error

access_log = logging.getLogger("chat_server.access")
REQUEST_ID_HEADER = "X-Request-ID"
# An incoming X-Request-ID is echoed only if it is this tame (it ends up in logs).
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
    # Database drivers log statements with their parameters at DEBUG (message
    # bodies, password hashes): never let them, whatever the level asked for.
    for noisy in ("aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
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
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
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
