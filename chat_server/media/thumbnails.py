"""Thumbnails: made once per (image, size) in the executor, cached under `thumbs/`."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from .sniffing import MAX_IMAGE_PIXELS, PIL_FORMATS
from .store import DISK_FULL

log = logging.getLogger("chat_server.media")

THUMBNAIL_SIZES = (96, 320, 800)
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


def cached_thumbnail(thumbs: Path, sha256: str, size: int) -> tuple[Path, str] | None:
    for ext, content_type, _ in THUMBNAIL_FORMATS:
        path = thumbs / f"{sha256}_{size}.{ext}"
        if path.is_file():
            return path, content_type
    return None


def make_thumbnail(source: Path, thumbs: Path, sha256: str, size: int) -> tuple[Path, str] | None:
    """Writes the cached thumbnail (PNG with alpha or from a GIF, else JPEG) once.

    None when Pillow cannot decode the image; OSError only when the disk is full.
    """
    cached = cached_thumbnail(thumbs, sha256, size)
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
            image: Image.Image = original
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
