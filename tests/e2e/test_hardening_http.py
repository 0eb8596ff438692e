"""Hostile HTTP over raw sockets: requests aiohttp cannot parse are answered in
the contract's error shape and logged in one line that quotes nothing of them
(a header line carries a token), never with a traceback; a client that hangs
up mid-body leaves no error behind."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from chat_server import create_app
from chat_server.observability import AppRunner

from ..helpers import PASSWORD
from ..helpers.servers import ServerProcess

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.SIGNATURE-never-logged"

# Requests the HTTP parser refuses; each quotes TOKEN where aiohttp would echo it.
MALFORMED = {
    "nul in a header": f"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\n"
    f"Authorization: Bearer {TOKEN}\x00\r\n\r\n",
    "cr in a header": f"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\n"
    f"Authorization: Bearer {TOKEN}\rX: y\r\n\r\n",
    "oversized header": f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Token: {TOKEN}{'a' * 9000}\r\n\r\n",
    "too many headers": "GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + "".join(f"X-{i}: {TOKEN}\r\n" for i in range(200))
    + "\r\n",
    "bad request target": f"GET /{TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": f"GET /{TOKEN} HTTP/9.Z\r\nHost: x\r\n\r\n",
    "bad chunk size": "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    f"Transfer-Encoding: chunked\r\n\r\n{TOKEN}\r\nabc\r\n0\r\n\r\n",
    "two content lengths": "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    f"Content-Length: 2\r\nContent-Length: 3\r\nX-Token: {TOKEN}\r\n\r\n{{}}",
}


def exchange(port: int, request: bytes) -> bytes:
    """Sends `request` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def json_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["content-type"].startswith("application/json"), answer[:300]
    return int(status_line.split()[1]), json.loads(body)


@pytest.mark.e2e
def test_malformed_requests_get_json_errors_and_one_clean_log_line(tmp_path: Path) -> None:
    server = ServerProcess({"CHAT_DATA_DIR": str(tmp_path / "data")}, tmp_path).start()
    try:
        for name, request in MALFORMED.items():
            answer = exchange(server.port, request.encode("latin-1"))
            assert TOKEN.encode() not in answer, (name, answer[:300])
            status, body = json_error(answer)
            assert status == 400, (name, body)
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
            assert body["error"]["code"] == "invalid_request", (name, body)
    finally:
        server.stop()
    logs = server.logs()
    assert TOKEN not in logs and "Bearer" not in logs, logs
    assert "Traceback" not in logs and " ERROR " not in logs, logs
    refused = [line for line in logs.splitlines() if "malformed request:" in line]
    assert 1 <= len(refused) <= len(MALFORMED), logs


async def test_embedded_app_logs_no_token_and_no_traceback(client, caplog) -> None:
    """An app from create_app run by aiohttp's own runner (as embedders do)."""
    caplog.set_level(logging.DEBUG)
    request = MALFORMED["nul in a header"].encode("latin-1")
    answer = await asyncio.to_thread(exchange, client.port, request)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    assert TOKEN not in caplog.text and "Bearer" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if "malformed" in r.getMessage()], caplog.text


class _Finished(logging.Handler):
    """Sets `done` when the access log records a request to `route`."""

    def __init__(self, route: str) -> None:
        super().__init__()
        self.route = route
        self.done = asyncio.Event()
        self.statuses: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "route", None) == self.route:
            self.statuses.append(record.status)  # type: ignore[attr-defined]
            self.done.set()


@pytest.fixture(params=["cancelling", "serving"])
async def port(request, aiohttp_client, config) -> AsyncIterator[int]:
    """A running app: under aiohttp's test server, which cancels the handler of a
    client that hangs up, or under the runner `python run.py` uses, where the
    handler's read fails instead."""
    if request.param == "cancelling":
        yield (await aiohttp_client(create_app(config))).port
        return
    runner = AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_a_client_hanging_up_mid_body_leaves_no_error(port, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        signed_up = await session.post(
            f"http://127.0.0.1:{port}/api/v1/auth/signup",
            json={"username": "alice", "password": PASSWORD},
        )
        token = (await signed_up.json())["access_token"]
    finished = _Finished("/api/v1/media")
    access = logging.getLogger("chat_server.access")
    access.addHandler(finished)
    boundary = "b0undary"
    part = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=a.bin\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + b"x" * 10_000
    head = (
        f"POST /api/v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + part)
        await writer.drain()
        writer.transport.abort()  # gone, 990 kB short
        await asyncio.wait_for(finished.done.wait(), 10)
    finally:
        access.removeHandler(finished)
    assert len(finished.statuses) == 1 and finished.statuses[0] < 500, finished.statuses
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
