"""A multipart upload into the store: the part named `file`, spooled, sniffed, placed, recorded."""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
from typing import cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web

from .. import keys
from ..errors import InvalidRequest, PayloadTooLarge
from ..models import IMAGE_TYPES, Media
from .sniffing import image_info, sniff
from .store import CHUNK, Spool, storage_error, store_blob

# The whole request body may exceed the upload limit by this much multipart
# framing (a Content-Length beyond it is refused before reading anything).
MULTIPART_SLACK = 1024 * 1024
# Parts before the one named `file` (clients send none or a few form fields):
# each costs a header parse, so thousands of tiny parts are refused early.
MAX_PARTS_BEFORE_FILE = 16
MAX_FILENAME = 255
# Bidi overrides and invisible marks that make "evil\u202egnp.exe" show as "evilexe.png".
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def display_filename(raw: str | None) -> str:
    """The client's filename made safe to show: never used as a path."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        c for c in name if unicodedata.category(c) not in ("Cc", "Cs") and not _INVISIBLE.match(c)
    ).strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name


class _BoundedBody:
    """The request body as the multipart parser reads it, refused (413) once the client
    has sent more than `limit` bytes of it: preamble, headers and boundaries included."""

    def __init__(self, stream: StreamReader, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    def _checked(self, data: bytes) -> bytes:
        if self._stream.total_bytes > self._limit:
            raise PayloadTooLarge(f"upload body over {self._limit} bytes")
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._checked(await self._stream.read(n))

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        return self._checked(await self._stream.readline(max_line_length=max_line_length))

    def at_eof(self) -> bool:
        return self._stream.at_eof()

    def unread_data(self, data: bytes) -> None:
        self._stream.unread_data(data)


async def file_part(request: web.Request, limit: int) -> BodyPartReader:
    """The first part named `file`; parts before it are skipped but count to the limit.

    The body as a whole may exceed `limit` by MULTIPART_SLACK bytes of framing.
    """
    body = _BoundedBody(request.content, limit + MULTIPART_SLACK)
    try:
        # aiohttp types the stream as StreamReader but reads only the four methods
        # _BoundedBody has (a Protocol would say so; aiohttp's annotation does not).
        reader = MultipartReader(request.headers, cast(StreamReader, body))
        skipped = 0
        for _ in range(MAX_PARTS_BEFORE_FILE + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                break
            if part.name == "file":
                return part
            while chunk := await part.read_chunk(CHUNK):
                skipped += len(chunk)
                if skipped > limit:
                    raise PayloadTooLarge(f"upload over {limit} bytes")
        else:
            raise PayloadTooLarge(f"more than {MAX_PARTS_BEFORE_FILE} parts before the file")
    except (ValueError, AssertionError, KeyError):
        pass  # malformed multipart
    raise InvalidRequest.fields({"file": "multipart/form-data with one part named file"})


async def receive(request: web.Request, part: BodyPartReader, user_id: int, limit: int) -> Media:
    """Stores the part's bytes (at most `limit`) and records them as the user's upload."""
    store = request.app[keys.MEDIA]
    filename = display_filename(_part_filename(part))
    try:
        spool: Spool = await store.run(Spool, store.root / "tmp")
    except OSError as exc:
        raise storage_error(exc) from None
    pending: asyncio.Future[None] | None = None
    try:
        received = 0
        while chunk := await part.read_chunk(CHUNK):
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"upload over {limit} bytes")
            if pending is not None:
                await pending
            # The write overlaps with reading the next chunk from the socket.
            pending = store.run(spool.write, chunk)
        if not part.at_eof():  # the body ended before the part's closing boundary
            raise ValueError("truncated multipart body")
        if pending is not None:
            await pending
            pending = None
        sha256 = await store.run(spool.finish)
        content_type = sniff(spool.head, spool.size, spool.text)
        width = height = None
        if content_type in IMAGE_TYPES:
            content_type, width, height = await store.run(image_info, spool.path, content_type)
        await store.run(store_blob, spool.path, store.blob_path(sha256), spool.size)
    except BaseException as exc:
        if pending is not None and not isinstance(exc, asyncio.CancelledError):
            # Let the last write finish so the file is gone before we answer.
            with contextlib.suppress(Exception):
                await pending
        _discard_after(spool, pending)
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            raise storage_error(exc) from None
        if isinstance(exc, ValueError):  # malformed multipart body
            raise InvalidRequest.fields({"file": "a complete multipart part"}) from None
        raise
    # A row whose insert fails leaves a blob that the next identical upload reuses.
    return await request.app[keys.DB].create_media(
        user_id, sha256, filename, content_type, spool.size, width, height
    )


def _part_filename(part: BodyPartReader) -> str | None:
    """The part's filename; browsers escape `"`, CR and LF as %22, %0D, %0A (WHATWG)."""
    try:
        name = part.filename
    except (ValueError, UnicodeError):
        return None
    if name is None:
        return None
    return name.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _discard_after(spool: Spool, pending: asyncio.Future[None] | None) -> None:
    """Removes the temporary file once no write to it is still running."""
    if pending is None or pending.done():
        if pending is not None and not pending.cancelled():
            pending.exception()
        spool.discard()
        return

    def later(future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            future.exception()
        spool.discard()

    pending.add_done_callback(later)
