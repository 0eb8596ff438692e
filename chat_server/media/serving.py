"""Sending a stored file: caching headers, If-None-Match, single byte ranges, If-Range."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.helpers import ETag

from ..errors import NotFound, RangeNotSatisfiable
from .store import CHUNK, MediaStore

log = logging.getLogger("chat_server.media")

CACHE_CONTROL = "private, max-age=86400"
MEDIA_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def content_disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII fallback `filename` and the exact UTF-8 `filename*` (RFC 5987)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


async def send_file(
    request: web.Request,
    store: MediaStore,
    path: Path,
    content_type: str,
    etag: str,
    disposition: str,
) -> web.StreamResponse:
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": MEDIA_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
        "Accept-Ranges": "bytes",
    }
    if etag_matches(request.if_none_match, etag):
        return web.Response(status=304, headers=headers)
    try:
        file, size = await store.run(_open, path)
    except FileNotFoundError:
        log.error("media file missing: %s", path)
        raise NotFound("media content missing") from None
    try:
        start, end, status = 0, size - 1, 200
        requested = byte_range(
            request.headers.get("Range"), request.headers.get("If-Range"), etag, size
        )
        if requested is not None:
            start, end = requested
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Type"] = content_type
        headers["Content-Disposition"] = disposition
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start + 1
        await response.prepare(request)
        if request.method != "HEAD":
            remaining = end - start + 1
            await store.run(file.seek, start)
            while remaining > 0:
                chunk = await store.run(file.read, min(CHUNK, remaining))
                if not chunk:
                    break  # the file shrank under us: the short body ends the connection
                await response.write(chunk)
                remaining -= len(chunk)
        await response.write_eof()
        return response
    finally:
        file.close()


def _open(path: Path) -> tuple[Any, int]:
    file = path.open("rb")
    return file, os.fstat(file.fileno()).st_size


def etag_matches(if_none_match: Iterable[ETag] | None, etag: str) -> bool:
    """If-None-Match (as aiohttp parsed it), compared weakly as RFC 9110 asks."""
    tags = tuple(if_none_match or ())
    return any(tag.value in (etag.strip('"'), "*") for tag in tags)


_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.IGNORECASE | re.ASCII)


def byte_range(
    range_header: str | None, if_range: str | None, etag: str, size: int
) -> tuple[int, int] | None:
    """One byte range (first, last) of a file of `size` bytes, None to send it all, or 416.

    Forms we do not understand (other units, several ranges, bad syntax) and a
    non-matching If-Range are ignored: the whole file is sent with 200.
    """
    if range_header is None:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.fullmatch(range_header.strip())
    if match is None or match.group(0).lower() == "bytes=-":
        return None
    first, last = match.groups()
    unsatisfiable = RangeNotSatisfiable(
        f"the file has {size} bytes", headers={"Content-Range": f"bytes */{size}"}
    )
    if first == "":
        if int(last) == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise unsatisfiable
    return start, size - 1 if last == "" else min(int(last), size - 1)
