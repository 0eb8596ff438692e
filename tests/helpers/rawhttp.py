"""HTTP/1.1 over a bare socket: bodies sent in pieces, and answers read before the body ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from aiohttp.test_utils import TestClient


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *pieces: bytes, pause: float = 0.0) -> None:
        """Writes each piece on its own, waiting `pause` seconds after each but the last.

        The pause is what is tested here: the server must have read what came
        before it, so it holds only part of the body when it looks.
        """
        for index, piece in enumerate(pieces):
            self.writer.write(piece)
            await self.writer.drain()
            if pause and index < len(pieces) - 1:
                await asyncio.sleep(pause)

    async def response(self, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, JSON body or None) of the next response."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, value in (line.split(":", 1) for line in lines[1:] if line)
        )
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return status, json.loads(body) if body else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # the server may have closed first
            await self.writer.wait_closed()


async def connect(client: TestClient) -> RawConnection:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return RawConnection(reader, writer)


def request_head(
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    content_length: int | None = None,
    content_type: str = "application/json",
) -> bytes:
    """The request line and headers; without `content_length` the body is chunked."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty one ends the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
