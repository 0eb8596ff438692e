"""The pure parts of media: sniffing, display filenames, Content-Disposition, ETags, Range."""

from __future__ import annotations

import pytest
from aiohttp.helpers import ETag

from chat_server.errors import RangeNotSatisfiable
from chat_server.media.ingest import MAX_FILENAME, display_filename
from chat_server.media.serving import byte_range, content_disposition, etag_matches
from chat_server.media.sniffing import OCTET, TEXT, sniff

ETAG = '"abc123"'

# --- sniffing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF87a..", "image/gif"),
        (b"GIF89a..", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"%PDF-1.7", "application/pdf"),
        (b"PK\x03\x04rest", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3", "video/webm"),
        (b"OggS\x00", "audio/ogg"),
        (b"ID3\x04", "audio/mpeg"),
        (b"\xff\xfb\x90", "audio/mpeg"),
    ],
)
def test_sniff_recognises_magic_numbers(head: bytes, expected: str) -> None:
    # The text flag does not matter once the magic number is known.
    assert sniff(head, 1000, is_text=True) == expected
    assert sniff(head, 1000, is_text=False) == expected


def test_sniff_never_says_html_or_svg() -> None:
    assert sniff(b"<!doctype html><script>", 100, is_text=True) == TEXT
    assert sniff(b'<svg xmlns="http://www.w3.org/2000/svg">', 100, is_text=True) == TEXT
    assert sniff(b"\x00\x01\x02binary", 100, is_text=False) == OCTET


def test_sniff_empty_and_truncated_heads() -> None:
    assert sniff(b"", 0, is_text=True) == OCTET
    assert sniff(b"\x89PNG", 4, is_text=False) == OCTET  # too short for the PNG signature
    assert sniff(b"RIFF\x00\x00\x00\x00AVI ", 12, is_text=False) == OCTET


# --- display filenames and Content-Disposition ----------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (None, "file"),
        ("", "file"),
        ("..", "file"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.png", "photo.png"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("a\x00b\r\nc.txt", "abc.txt"),
        ("  spaced.txt  ", "spaced.txt"),
        ("résumé 😀.pdf", "résumé 😀.pdf"),
    ],
)
def test_display_filename(raw: str | None, shown: str) -> None:
    assert display_filename(raw) == shown


def test_display_filename_keeps_the_extension_when_shortening() -> None:
    name = display_filename("x" * 300 + ".jpeg")
    assert len(name) == MAX_FILENAME and name.endswith(".jpeg")
    assert display_filename("y" * 300) == "y" * MAX_FILENAME


def test_content_disposition_has_an_ascii_fallback_and_the_exact_name() -> None:
    assert content_disposition("attachment", 'a "b"%.txt') == (
        "attachment; filename=\"a _b__.txt\"; filename*=UTF-8''a%20%22b%22%25.txt"
    )
    assert content_disposition("inline", "é.png") == (
        "inline; filename=\"_.png\"; filename*=UTF-8''%C3%A9.png"
    )


# --- If-None-Match -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "matches"),
    [
        (None, False),
        ((), False),
        ((ETag("abc123"),), True),
        ((ETag("abc123", is_weak=True),), True),  # weak comparison
        ((ETag("other"), ETag("abc123")), True),
        ((ETag("*"),), True),
        ((ETag("abc1234"),), False),
    ],
)
def test_etag_matches(tags: tuple[ETag, ...] | None, matches: bool) -> None:
    assert etag_matches(tags, ETAG) is matches


# --- Range ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("BYTES=1-2", (1, 2)),
        (" bytes=1-2 ", (1, 2)),
        # Not understood, so ignored: the whole file with 200.
        ("bytes=-", None),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
        ("bytes=" + "9" * 20 + "-", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, None, ETAG, 1000) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=-1", 0), ("bytes=0-", 0)],
)
def test_unsatisfiable_ranges_are_416_naming_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        byte_range(header, None, ETAG, size)
    assert raised.value.headers == {"Content-Range": f"bytes */{size}"}


def test_if_range_applies_the_range_only_for_the_current_etag() -> None:
    assert byte_range("bytes=0-9", ETAG, ETAG, 1000) == (0, 9)
    assert byte_range("bytes=0-9", f" {ETAG} ", ETAG, 1000) == (0, 9)
    assert byte_range("bytes=0-9", '"stale"', ETAG, 1000) is None
    assert byte_range("bytes=0-9", f"W/{ETAG}", ETAG, 1000) is None  # If-Range is strong
    assert byte_range("bytes=5000-", '"stale"', ETAG, 1000) is None  # not even a 416
