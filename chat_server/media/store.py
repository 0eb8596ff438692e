"""Where media bytes live: the directories, the executor doing their I/O, spooling, blobs."""

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
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import keys
from ..errors import ApiError, InsufficientStorage

log = logging.getLogger("chat_server.media")

# Bytes read from the request and written/read per executor call: large enough
# that the thread hop costs little, small enough to keep memory flat.
CHUNK = 256 * 1024
# Thumbnails generated at once per process (each may decode a 50 MP image).
THUMBNAIL_CONCURRENCY = 2
# Threads for file I/O, hashing and Pillow per process.
MEDIA_THREADS = 4
# Leftover temporary files older than this are removed at start (several nodes
# may share the media dir, so only files no live upload can still own).
STALE_TEMP_SECONDS = 24 * 3600
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


class Spool:
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


def store_blob(temp: Path, final: Path, size: int) -> None:
    """Moves a finished upload into place, or drops it when the bytes are stored already."""
    final.parent.mkdir(exist_ok=True)
    try:
        if final.stat().st_size == size:
            temp.unlink()
            return
    except FileNotFoundError:
        pass
    os.replace(temp, final)


def storage_error(exc: OSError) -> ApiError:
    if exc.errno in DISK_FULL:
        return InsufficientStorage("the media storage is full")
    log.error("media storage error: %s", exc)
    return ApiError("media storage error")
