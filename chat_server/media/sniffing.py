"""Content types from the bytes themselves; the client's claim is never used."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

OCTET = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
# Images with more pixels are never decoded: 50 MP is a large camera photo, and
# decoding one as RGBA already takes 200 MB.
MAX_IMAGE_PIXELS = 50_000_000
# Pillow format names of the image types we decode.
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def sniff(head: bytes, size: int, is_text: bool) -> str:
    """The content type from magic numbers in the first bytes (`head`) of a file."""
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


def image_info(path: Path, content_type: str) -> tuple[str, int | None, int | None]:
    """(type, width, height), reading only the header; see the package notes."""
    try:
        with Image.open(path, formats=[PIL_FORMATS[content_type]]) as image:
            width, height = image.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                return OCTET, None, None
            image.verify()
    except Exception:  # Pillow raises many types for bad input, bombs included
        return OCTET, None, None
    return content_type, width, height
