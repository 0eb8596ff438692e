"""/media routes: streamed uploads, sniffed types, content-addressed storage, thumbnails.

Bytes live at `<media dir>/<sha[:2]>/<sha>`, so identical uploads share one
file; each upload still gets its own row (uploader, display filename, type).
Uploads stream through a temporary file in `<media dir>/tmp/` while being hashed
and are renamed into place only when complete; thumbnails are cached under
`<media dir>/thumbs/`. All file I/O, hashing and Pillow work runs in the media
executor, never on the event loop (DESIGN.md invariant 7).

Decisions where API.md is silent:
- Images over MAX_IMAGE_PIXELS, and bytes that look like an image but Pillow
  cannot read, are stored as `application/octet-stream` with null dimensions:
  still downloadable (as an attachment), never decoded, no thumbnail.
- Empty files are `application/octet-stream`; HTML and SVG are at most text/plain.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from PIL import Image

from . import keys
from .auth import require_auth
from .errors import (
    ApiError,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    UnsupportedMediaType,
    error_response,
)
from .models import IMAGE_TYPES, Media
from .validation import path_id

log = logging.getLogger("chat_server.media")

# Bytes read from the request and written/read per executor call: large enough
# that the thread hop costs little, small enough to keep memory flat.
CHUNK = 256 * 1024
# A Content-Length beyond the upload limit plus this much multipart framing is
# refused before reading anything.
MULTIPART_SLACK = 1024 * 1024
# Images with more pixels are never decoded: 50 MP is a large camera photo, and
# decoding one as RGBA already takes 200 MB.
MAX_IMAGE_PIXELS = 50_000_000
THUMBNAIL_SIZES = (96, 320, 800)
# Thumbnails generated at once per process (each may decode a 50 MP image).
THUMBNAIL_CONCURRENCY = 2
# Threads for file I/O, hashing and Pillow per process.
MEDIA_THREADS = 4
# Leftover temporary files older than this are removed at start (several nodes
# may share the media dir, so only files no live upload can still own).
STALE_TEMP_SECONDS = 24 * 3600
MAX_FILENAME = 255
CACHE_CONTROL = "private, max-age=86400"
MEDIA_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
OCTET = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Pillow format names of the image types we decode.
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


@dataclass
class MediaStore:
    root: Path
    executor: ThreadPoolExecutor
    thumbnail_slots: asyncio.Semaphore

    def blob_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a sha256")
        return self.root / sha256[:2] / sha256

    def run(self, func: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.executor, func, *args)


async def media_store(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the media directories and the executor doing their I/O."""
    root = app[keys.CONFIG].resolved_media_dir
    executor = ThreadPoolExecutor(MEDIA_THREADS, thread_name_prefix="media")
    store = MediaStore(root, executor, asyncio.Semaphore(THUMBNAIL_CONCURRENCY))
    await store.run(_prepare_dirs, root)
    app[keys.MEDIA] = store
    yield
    executor.shutdown(wait=True, cancel_futures=True)


def _prepare_dirs(root: Path) -> None:
    for sub in ("tmp", "thumbs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_TEMP_SECONDS
    for sub in ("tmp", "thumbs"):
        for leftover in (root / sub).glob("*.part"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()


# --- upload ------------------------------------------------------------------------


class _Spool:
    """A temporary file that hashes and checks for UTF-8 text what is written to it.

    Every method runs in the executor; calls are never concurrent.
    """

    SNIFF_BYTES = 64

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.text = True
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)
        if len(self.head) < self.SNIFF_BYTES:
            self.head += data[: self.SNIFF_BYTES - len(self.head)]
        if self.text:
            self._check_text(data, final=False)

    def _check_text(self, data: bytes, *, final: bool) -> None:
        if b"\x00" in data:
            self.text = False
            return
        try:
            self._utf8.decode(data, final)
        except UnicodeDecodeError:
            self.text = False

    def finish(self) -> str:
        """Flushes to stable storage and closes; returns the sha256."""
        if self.text:
            self._check_text(b"", final=True)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.path.unlink(missing_ok=True)


def sniff(head: bytes, size: int, is_text: bool) -> str:
    """The content type from magic numbers; the client's claim is never used."""
    if size == 0:
        return OCTET
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "application/zip"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    # Anything else, HTML and SVG included, is at most plain text.
    return TEXT if is_text else OCTET


def _image_info(path: Path, content_type: str) -> tuple[str, int | None, int | None]:
    """(type, width, height), reading only the header; see the module notes."""
    try:
        with Image.open(path, formats=[PIL_FORMATS[content_type]]) as image:
            width, height = image.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                return OCTET, None, None
            image.verify()
    except Exception:  # Pillow raises many types for bad input, bombs included
        return OCTET, None, None
    return content_type, width, height


def _store_blob(temp: Path, final: Path, size: int) -> None:
    """Moves a finished upload into place, or drops it when the bytes are stored already."""
    final.parent.mkdir(exist_ok=True)
    try:
        if final.stat().st_size == size:
            temp.unlink()
            return
    except FileNotFoundError:
        pass
    os.replace(temp, final)


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


async def _file_part(request: web.Request, limit: int) -> BodyPartReader:
    """The first part named `file`; parts before it are skipped but count to the limit."""
    try:
        reader = await request.multipart()
        skipped = 0
        while True:
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
    except (ValueError, AssertionError, KeyError):
        pass  # malformed multipart
    raise InvalidRequest.fields({"file": "multipart/form-data with one part named file"})


async def upload(request: web.Request) -> web.StreamResponse:
    me = await require_auth(request)
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("expected multipart/form-data with a part named file")
    limit = request.app[keys.CONFIG].max_upload_bytes
    try:
        if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
            raise PayloadTooLarge(f"upload over {limit} bytes")
        part = await _file_part(request, limit)
        media = await _receive(request, part, me.user_id, limit)
    except PayloadTooLarge as error:
        # Nothing more is parsed or stored. aiohttp drains what the client still
        # sends to nowhere for at most its lingering time (10 s) and then closes:
        # closing at once makes clients see a connection reset instead of the 413.
        response = error_response(error)
        response.force_close()
        return response
    return web.json_response(media.to_json(), status=201)


async def _receive(request: web.Request, part: BodyPartReader, user_id: int, limit: int) -> Media:
    store = request.app[keys.MEDIA]
    filename = display_filename(_part_filename(part))
    try:
        spool: _Spool = await store.run(_Spool, store.root / "tmp")
    except OSError as exc:
        raise _storage_error(exc) from None
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
            content_type, width, height = await store.run(_image_info, spool.path, content_type)
        await store.run(_store_blob, spool.path, store.blob_path(sha256), spool.size)
    except BaseException as exc:
        if pending is not None and not isinstance(exc, asyncio.CancelledError):
            # Let the last write finish so the file is gone before we answer.
            with contextlib.suppress(Exception):
                await pending
        _discard_after(spool, pending)
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            raise _storage_error(exc) from None
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


def _discard_after(spool: _Spool, pending: asyncio.Future[None] | None) -> None:
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


def _storage_error(exc: OSError) -> ApiError:
    if exc.errno in DISK_FULL:
        return InsufficientStorage("the media storage is full")
    log.error("media storage error: %s", exc)
    return ApiError("media storage error")


# --- download ----------------------------------------------------------------------


async def _readable(request: web.Request) -> tuple[MediaStore, Media]:
    """The media of the URL if the caller may read it; 404 otherwise (API.md's rules)."""
    me = await require_auth(request)
    media_id = path_id(request, "media_id")
    media = await request.app[keys.DB].readable_media(media_id, me.user_id)
    if media is None:
        raise NotFound("no such media")
    return request.app[keys.MEDIA], media


async def download(request: web.Request) -> web.StreamResponse:
    store, media = await _readable(request)
    kind = "inline" if media.is_image else "attachment"
    return await _send_file(
        request,
        store,
        store.blob_path(media.sha256),
        media.content_type,
        f'"{media.sha256}"',
        content_disposition(kind, media.filename),
    )


async def thumbnail(request: web.Request) -> web.StreamResponse:
    store, media = await _readable(request)
    text = request.query.get("size", "")
    if text not in {str(size) for size in THUMBNAIL_SIZES}:
        raise InvalidRequest.fields({"size": "one of 96, 320, 800"})
    size = int(text)
    if not media.is_image:
        raise NotFound("not an image: no thumbnail")
    thumbs = store.root / "thumbs"
    found = await store.run(_cached_thumbnail, thumbs, media.sha256, size)
    if found is None:
        async with store.thumbnail_slots:
            try:
                found = await store.run(
                    _make_thumbnail, store.blob_path(media.sha256), thumbs, media.sha256, size
                )
            except OSError as exc:
                raise _storage_error(exc) from None
    if found is None:
        raise NotFound("this image has no thumbnail")
    path, content_type = found
    return await _send_file(
        request, store, path, content_type, f'"{media.sha256}-{size}"', "inline"
    )


def content_disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII fallback `filename` and the exact UTF-8 `filename*` (RFC 5987)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


async def _send_file(
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
    if _etag_matches(request, etag):
        return web.Response(status=304, headers=headers)
    try:
        file, size = await store.run(_open, path)
    except FileNotFoundError:
        log.error("media file missing: %s", path)
        raise NotFound("media content missing") from None
    try:
        start, end, status = 0, size - 1, 200
        requested = _requested_range(request, etag, size)
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


def _etag_matches(request: web.Request, etag: str) -> bool:
    """If-None-Match, compared weakly as RFC 9110 asks."""
    tags = request.if_none_match
    return bool(tags) and any(tag.value in (etag.strip('"'), "*") for tag in tags)


_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.IGNORECASE | re.ASCII)


def _requested_range(request: web.Request, etag: str, size: int) -> tuple[int, int] | None:
    """One byte range (first, last), None to send everything, or 416.

    Forms we do not understand (other units, several ranges, bad syntax) and a
    non-matching If-Range are ignored: the whole file is sent with 200.
    """
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.fullmatch(header.strip())
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


# --- thumbnails --------------------------------------------------------------------

# (file extension, content type, Pillow format) of the thumbnails we write.
THUMBNAIL_FORMATS = (("png", "image/png", "PNG"), ("jpg", "image/jpeg", "JPEG"))
# EXIF orientation → the transpose that shows the image upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION = 0x0112


def _cached_thumbnail(thumbs: Path, sha256: str, size: int) -> tuple[Path, str] | None:
    for ext, content_type, _ in THUMBNAIL_FORMATS:
        path = thumbs / f"{sha256}_{size}.{ext}"
        if path.is_file():
            return path, content_type
    return None


def _make_thumbnail(source: Path, thumbs: Path, sha256: str, size: int) -> tuple[Path, str] | None:
    """Writes the cached thumbnail (PNG with alpha or from a GIF, else JPEG) once.

    None when Pillow cannot decode the image; OSError only when the disk is full.
    """
    cached = _cached_thumbnail(thumbs, sha256, size)
    if cached is not None:
        return cached
    try:
        with Image.open(source, formats=list(PIL_FORMATS.values())) as original:
            if original.width * original.height > MAX_IMAGE_PIXELS:
                return None
            orientation = original.getexif().get(EXIF_ORIENTATION, 1)
            alpha = (
                original.format == "GIF"
                or original.mode in ("RGBA", "LA", "PA", "RGBa", "La")
                or "transparency" in original.info
            )
            original.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image = original
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if alpha else "RGB")
            image.thumbnail((size, size))
            if orientation in _UPRIGHT:
                image = image.transpose(_UPRIGHT[orientation])
            ext, content_type, fmt = THUMBNAIL_FORMATS[0 if alpha else 1]
            image = image.convert("RGBA" if alpha else "RGB")
            return _write_thumbnail(image, thumbs / f"{sha256}_{size}.{ext}", fmt), content_type
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise
        log.warning("cannot thumbnail %s: %s", sha256, exc)
        return None
    except Exception as exc:  # Pillow raises many types for undecodable input
        log.warning("cannot thumbnail %s: %s", sha256, exc)
        return None


def _write_thumbnail(image: Image.Image, path: Path, fmt: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            if fmt == "JPEG":
                image.save(file, fmt, quality=85)
            else:
                image.save(file, fmt)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path
