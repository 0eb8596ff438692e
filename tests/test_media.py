"""Media (API.md "Media"): streamed uploads, sniffing, storage, access, ranges, thumbnails."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import resource
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from chat_server import create_app, keys
from chat_server.media.store import Spool

from .helpers import create_room, error_of, make_config, messages_path, send, signup
from .helpers.media import MEDIA, get_media, upload, uploaded
from .helpers.rawhttp import chunk, connect, request_head

BOUNDARY = "test-boundary-4d1c"


def image_bytes(fmt: str, size: tuple[int, int] = (1000, 500), mode: str = "RGB", **save) -> bytes:
    buffer = io.BytesIO()
    color = (200, 30, 60, 128) if mode == "RGBA" else (200, 30, 60) if mode == "RGB" else 7
    Image.new(mode, size, color).save(buffer, fmt, **save)
    return buffer.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side×side pixels: ~50 KB on the wire, 400 MB if decoded as mode 1."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def media_dir(client) -> Path:
    return client.app[keys.CONFIG].resolved_media_dir


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def chunked_body(size: int, filename: str = "stream.bin"):
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = b"z" * 65536
    for offset in range(0, size, len(block)):
        yield block[: size - offset]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


# --- upload and download ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
async def test_image_round_trip(client, alice, fmt, content_type):
    data = image_bytes(fmt, (640, 480))
    body = await uploaded(client, alice, data, filename=f"pic.{fmt.lower()}")
    assert body["content_type"] == content_type
    assert (body["width"], body["height"]) == (640, 480)
    assert body["size"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["filename"] == f"pic.{fmt.lower()}" and body["created_at"].endswith("Z")
    response = await get_media(client, alice, body["id"])
    assert response.status == 200 and await response.read() == data
    assert response.headers["Content-Type"] == content_type
    assert response.headers["ETag"] == f'"{body["sha256"]}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_large_binary_round_trip_and_deduplication(client, alice, bob):
    data = os.urandom(3 * 1024 * 1024 + 17)
    first = await uploaded(client, alice, data)
    second = await uploaded(client, bob, data, filename="copy.bin")
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    assert first["content_type"] == "application/octet-stream" and first["width"] is None
    sha = first["sha256"]
    blobs = [p for p in stored_files(media_dir(client)) if p.parent.name != "thumbs"]
    assert blobs == [media_dir(client) / sha[:2] / sha]
    assert await (await get_media(client, alice, first["id"])).read() == data
    # The same bytes do not grant access to another upload's row.
    await error_of(await get_media(client, bob, first["id"]), 404)


async def test_text_and_binary_sniffing(client, alice):
    text = ("é" * 300_000).encode()  # multi-byte characters across chunk boundaries
    assert (await uploaded(client, alice, text))["content_type"] == "text/plain; charset=utf-8"
    with_nul = b"hello\x00world"
    assert (await uploaded(client, alice, with_nul))["content_type"] == "application/octet-stream"
    latin1 = "café".encode("latin-1")
    assert (await uploaded(client, alice, latin1))["content_type"] == "application/octet-stream"
    pdf = b"%PDF-1.7\n" + os.urandom(100)
    assert (await uploaded(client, alice, pdf))["content_type"] == "application/pdf"
    zipped = b"PK\x03\x04" + os.urandom(100)
    assert (await uploaded(client, alice, zipped))["content_type"] == "application/zip"
    mp4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(100)
    assert (await uploaded(client, alice, mp4))["content_type"] == "video/mp4"
    empty = await uploaded(client, alice, b"")
    assert empty["size"] == 0 and empty["content_type"] == "application/octet-stream"
    response = await get_media(client, alice, empty["id"])
    assert response.status == 200 and await response.read() == b""


async def test_spoofed_content_types(client, alice):
    png = image_bytes("PNG", (32, 16))
    body = await uploaded(client, alice, png, filename="evil.html", content_type="text/html")
    assert body["content_type"] == "image/png" and (body["width"], body["height"]) == (32, 16)

    html = b"<!doctype html><script>alert(document.cookie)</script>"
    body = await uploaded(client, alice, html, filename="cat.png", content_type="image/png")
    assert body["content_type"] == "text/plain; charset=utf-8" and body["width"] is None
    response = await get_media(client, alice, body["id"])
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    body = await uploaded(client, alice, svg, filename="x.svg", content_type="image/svg+xml")
    assert "svg" not in body["content_type"] and "html" not in body["content_type"]
    response = await get_media(client, alice, body["id"])
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    # Image magic bytes that Pillow cannot read: stored as an opaque file.
    fake = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10
    body = await uploaded(client, alice, fake, filename="broken.png")
    assert body["content_type"] == "application/octet-stream" and body["width"] is None
    response = await get_media(client, alice, body["id"])
    assert response.headers["Content-Disposition"].startswith("attachment;")


async def test_filenames_are_sanitised_for_display_only(client, alice):
    body = await uploaded(client, alice, b"x", filename="../../etc/passwd")
    assert body["filename"] == "passwd"
    assert (await uploaded(client, alice, b"x", filename="..\\..\\boot.ini"))["filename"] == (
        "boot.ini"
    )
    assert (await uploaded(client, alice, b"x", filename=".."))["filename"] == "file"
    assert (await uploaded(client, alice, b"x", filename="a\u202egnp.exe"))["filename"] == (
        "agnp.exe"
    )
    long = await uploaded(client, alice, b"x", filename="a" * 2000 + ".txt")
    assert len(long["filename"]) == 255 and long["filename"].endswith("a.txt")
    sha = long["sha256"]
    assert media_dir(client).joinpath(sha[:2], sha).is_file()
    assert not (media_dir(client).parent / "etc").exists()

    unicode = await uploaded(client, alice, b"x", filename='résumé "final" ✓.txt')
    disposition = (await get_media(client, alice, unicode["id"])).headers["Content-Disposition"]
    assert disposition == (
        'attachment; filename="r_sum_ _final_ _.txt"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%20%E2%9C%93.txt"
    )


async def test_bad_uploads(client, alice):
    await error_of(await client.post(MEDIA, data=b"x"), 401)
    not_multipart = await client.post(MEDIA, json={"file": "x"}, headers=alice.headers)
    assert (await error_of(not_multipart, 415))["code"] == "unsupported_media_type"
    form = aiohttp.FormData()
    form.add_field("other", b"data", filename="a.txt")
    missing = await client.post(MEDIA, data=form, headers=alice.headers)
    assert (await error_of(missing, 400))["details"]["fields"].keys() == {"file"}
    no_boundary = await client.post(
        MEDIA, data=b"abc", headers={**alice.headers, "Content-Type": "multipart/form-data"}
    )
    assert (await error_of(no_boundary, 400))["details"]["fields"].keys() == {"file"}
    truncated = await client.post(
        MEDIA,
        data=f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'.encode(),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert (await error_of(truncated, 400))["details"]["fields"].keys() == {"file"}
    await error_of(await get_media(client, alice, "abc"), 404)
    await error_of(await get_media(client, alice, 999), 404)
    leftovers = [p for p in stored_files(media_dir(client))]
    assert leftovers == []


async def test_chunked_upload_without_content_length(client, alice):
    response = await client.post(
        MEDIA,
        data=chunked_body(300_000, "chunked.bin"),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    body = await response.json()
    assert response.status == 201, body
    assert body["size"] == 300_000 and body["filename"] == "chunked.bin"
    assert body["sha256"] == hashlib.sha256(b"z" * 300_000).hexdigest()


async def test_upload_limit(aiohttp_client, tmp_path, database_url):
    client = await aiohttp_client(create_app(make_config(tmp_path, database_url, max_upload_mb=1)))
    alice = await signup(client, "alice")
    root = media_dir(client)
    limit = 1024 * 1024

    over = await upload(client, alice, os.urandom(limit + 1))
    assert (await error_of(over, 413))["code"] == "payload_too_large"
    assert stored_files(root) == []

    streamed = await client.post(
        MEDIA,
        data=chunked_body(3 * limit),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert (await error_of(streamed, 413))["code"] == "payload_too_large"

    huge = await client.post(
        MEDIA,
        data=b"x" * (3 * limit),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert (await error_of(huge, 413))["code"] == "payload_too_large"
    assert stored_files(root) == []
    assert await _uploads_of(client, alice.id) == 0

    # The server still serves, and exactly the limit is accepted.
    at_limit = await uploaded(client, alice, b"y" * limit)
    assert at_limit["size"] == limit
    assert (await client.get("/healthz")).status == 200


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    f"hello\r\n--{BOUNDARY}--\r\n"
).encode()


def tiny_parts(count: int) -> bytes:
    return b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode()
        for i in range(count)
    )


@pytest.fixture
async def small_limit(aiohttp_client, tmp_path, database_url):
    """A client of a server with CHAT_MAX_UPLOAD_MB=1, and an account on it."""
    client = await aiohttp_client(create_app(make_config(tmp_path, database_url, max_upload_mb=1)))
    return client, await signup(client, "alice")


async def test_many_tiny_parts_are_refused(small_limit):
    client, alice = small_limit
    body = tiny_parts(5000) + FILE_PART  # 300 KB, all but 5 bytes of it framing
    response = await client.post(
        MEDIA, data=body, headers={**alice.headers, "Content-Type": MULTIPART}
    )
    assert (await error_of(response, 413))["code"] == "payload_too_large"
    assert stored_files(media_dir(client)) == []
    assert await _uploads_of(client, alice.id) == 0


async def test_endless_parts_are_refused_before_the_body_ends(small_limit):
    client, alice = small_limit
    conn = await connect(client)

    async def send_parts() -> None:
        await conn.send(request_head("POST", MEDIA, alice.headers, content_type=MULTIPART))
        for _ in range(200):  # 20,000 parts in 1.2 MB: under the byte bound, never ended
            await conn.send(chunk(tiny_parts(100)))

    status, answer = await _answer_while_sending(conn, send_parts())
    assert status == 413, answer
    assert "parts" in answer["error"]["message"]
    assert (await client.get("/healthz")).status == 200


async def _answer_while_sending(conn, sending) -> tuple[int, Any]:
    """The response that comes while (or after) `sending` writes a body that never ends."""
    sender = asyncio.create_task(sending)
    try:
        return await conn.response(timeout=10)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        await conn.close()


async def test_multipart_framing_counts_against_the_upload_limit(small_limit):
    client, alice = small_limit
    line = b"p" * 1000 + b"\r\n"  # a preamble: parsers skip it, but it is body all the same
    conn = await connect(client)

    async def send_preamble() -> None:
        head = request_head("POST", MEDIA, alice.headers, content_type=MULTIPART)
        await conn.send(head)
        for _ in range(30):  # 3 MB, past the 1 MiB upload plus 1 MiB of framing; never ended
            await conn.send(chunk(line * 100))

    status, answer = await _answer_while_sending(conn, send_preamble())
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert stored_files(media_dir(client)) == []
    assert await _uploads_of(client, alice.id) == 0


async def test_full_disk_is_507_and_leaves_nothing(client, alice, monkeypatch):
    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "write", disk_full)
    response = await upload(client, alice, os.urandom(600_000))
    assert (await error_of(response, 507))["code"] == "insufficient_storage"
    assert stored_files(media_dir(client)) == []
    assert await _uploads_of(client, alice.id) == 0


async def test_png_bomb_is_not_decoded(client, alice):
    bomb = png_bomb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    body = await uploaded(client, alice, bomb, filename="bomb.png")
    assert time.monotonic() - started < 5
    # Over the pixel cap: stored as an opaque file, never decoded, no thumbnail.
    assert body["content_type"] == "application/octet-stream"
    assert body["width"] is None and body["height"] is None
    await error_of(await get_media(client, alice, body["id"], "/thumbnail?size=96"), 404)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 150 * 1024


# --- conditional and range requests -------------------------------------------------


async def test_etag_and_ranges(client, alice):
    data = bytes(range(256)) * 40
    body = await uploaded(client, alice, data)
    etag = f'"{body["sha256"]}"'

    not_modified = await get_media(client, alice, body["id"], **{"If-None-Match": etag})
    assert not_modified.status == 304 and not_modified.headers["ETag"] == etag
    weak = await get_media(client, alice, body["id"], **{"If-None-Match": f'"other", W/{etag}'})
    assert weak.status == 304
    other = await get_media(client, alice, body["id"], **{"If-None-Match": '"other"'})
    assert other.status == 200 and await other.read() == data

    for header, expected, first, last in [
        ("bytes=0-9", data[:10], 0, 9),
        ("bytes=10-", data[10:], 10, len(data) - 1),
        ("bytes=-5", data[-5:], len(data) - 5, len(data) - 1),
        ("bytes=100-99999", data[100:], 100, len(data) - 1),
    ]:
        partial = await get_media(client, alice, body["id"], Range=header)
        assert partial.status == 206, header
        assert await partial.read() == expected
        assert partial.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
        assert partial.headers["ETag"] == etag

    for header in ("bytes=99999-", "bytes=-0"):
        unsatisfiable = await get_media(client, alice, body["id"], Range=header)
        assert (await error_of(unsatisfiable, 416))["code"] == "range_not_satisfiable"
        assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(data)}"

    for header in ("bytes=abc", "bytes=0-1,3-4", "items=0-1", "bytes=9-2", "bytes=-"):
        ignored = await get_media(client, alice, body["id"], Range=header)
        assert ignored.status == 200, header
        assert await ignored.read() == data

    stale = await get_media(client, alice, body["id"], Range="bytes=0-9", **{"If-Range": '"old"'})
    assert stale.status == 200
    fresh = await get_media(client, alice, body["id"], Range="bytes=0-9", **{"If-Range": etag})
    assert fresh.status == 206

    head = await client.head(f"{MEDIA}/{body['id']}", headers=alice.headers)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data))


# --- access -------------------------------------------------------------------------


async def test_private_room_media_follows_membership(client, alice, bob):
    carol = await signup(client, "carol")
    room = await create_room(client, alice, "secret", kind="private")
    members = f"/api/v1/rooms/{room['id']}/members"
    assert (await client.post(members, json={"user_id": bob.id}, headers=alice.headers)).status == (
        201
    )
    item = await uploaded(client, alice, image_bytes("PNG", (50, 50)))
    # Not attached anywhere yet: only the uploader.
    await error_of(await get_media(client, bob, item["id"]), 404)
    assert (await get_media(client, alice, item["id"])).status == 200

    message = await send(client, alice, room, "look", attachments=[item["id"]])
    assert [m["id"] for m in message["attachments"]] == [item["id"]]
    assert (await get_media(client, bob, item["id"])).status == 200
    assert (await get_media(client, bob, item["id"], "/thumbnail?size=96")).status == 200
    await error_of(await get_media(client, carol, item["id"]), 404)
    await error_of(await get_media(client, carol, item["id"], "/thumbnail?size=96"), 404)
    await error_of(await client.get(f"{MEDIA}/{item['id']}"), 401)

    assert (await client.delete(f"{members}/{bob.id}", headers=alice.headers)).status == 204
    await error_of(await get_media(client, bob, item["id"]), 404)
    await error_of(await get_media(client, bob, item["id"], "/thumbnail?size=96"), 404)


async def test_deleted_message_no_longer_shares_its_media(client, alice, bob):
    room = await create_room(client, alice, "open")
    item = await uploaded(client, alice, b"shared notes")
    message = await send(client, alice, room, "notes", attachments=[item["id"]])
    assert (await get_media(client, bob, item["id"])).status == 200
    path = f"{messages_path(room)}/{message['id']}"
    assert (await client.delete(path, headers=alice.headers)).status == 204
    await error_of(await get_media(client, bob, item["id"]), 404)


async def test_public_room_media_is_readable_by_anyone_signed_in(client, alice, bob):
    room = await create_room(client, alice, "lobby", kind="public")
    item = await uploaded(client, alice, b"hello all")
    await send(client, alice, room, "", attachments=[item["id"]])
    response = await get_media(client, bob, item["id"])  # bob never joined
    assert response.status == 200 and await response.read() == b"hello all"


async def test_avatar_is_readable_by_anyone_signed_in(client, alice, bob):
    item = await uploaded(client, alice, image_bytes("JPEG", (64, 64)))
    await error_of(await get_media(client, bob, item["id"]), 404)
    patched = await client.patch(
        "/api/v1/users/me", json={"avatar_media_id": item["id"]}, headers=alice.headers
    )
    assert patched.status == 200
    assert (await get_media(client, bob, item["id"])).status == 200
    assert (await get_media(client, bob, item["id"], "/thumbnail?size=96")).status == 200


# --- thumbnails ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "thumb_type"),
    [
        ("PNG", "RGBA", "image/png"),
        ("PNG", "RGB", "image/jpeg"),
        ("JPEG", "RGB", "image/jpeg"),
        ("GIF", "P", "image/png"),
        ("WEBP", "RGB", "image/jpeg"),
    ],
)
async def test_thumbnails(client, alice, fmt, mode, thumb_type):
    item = await uploaded(client, alice, image_bytes(fmt, (1000, 500), mode))
    thumbs = media_dir(client) / "thumbs"
    for size in (96, 320, 800):
        response = await get_media(client, alice, item["id"], f"/thumbnail?size={size}")
        assert response.status == 200
        assert response.headers["Content-Type"] == thumb_type
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"] == "inline"
        with Image.open(io.BytesIO(await response.read())) as thumb:
            assert thumb.size == (size, size // 2)

    ext = "png" if thumb_type == "image/png" else "jpg"
    cached = thumbs / f"{item['sha256']}_96.{ext}"
    assert cached.is_file()
    before = cached.stat()
    again = await get_media(client, alice, item["id"], "/thumbnail?size=96")
    etag = again.headers["ETag"]
    assert again.status == 200 and etag == f'"{item["sha256"]}-96"'
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in thumbs.iterdir()) == sorted(
        f"{item['sha256']}_{size}.{ext}" for size in (96, 320, 800)
    )
    not_modified = await get_media(
        client, alice, item["id"], "/thumbnail?size=96", **{"If-None-Match": etag}
    )
    assert not_modified.status == 304


async def test_thumbnails_are_upright_and_never_upscaled(client, alice):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: shown as 100 wide, 200 high
    item = await uploaded(client, alice, image_bytes("JPEG", (200, 100), exif=exif))
    response = await get_media(client, alice, item["id"], "/thumbnail?size=96")
    with Image.open(io.BytesIO(await response.read())) as thumb:
        assert thumb.size == (48, 96)
    small = await uploaded(client, alice, image_bytes("PNG", (50, 30)))
    response = await get_media(client, alice, small["id"], "/thumbnail?size=800")
    with Image.open(io.BytesIO(await response.read())) as thumb:
        assert thumb.size == (50, 30)


async def test_thumbnail_errors(client, alice):
    image = await uploaded(client, alice, image_bytes("PNG", (20, 20)))
    for query in ("?size=100", "?size=abc", "", "?size=96.0"):
        response = await get_media(client, alice, image["id"], f"/thumbnail{query}")
        assert (await error_of(response, 400))["details"]["fields"].keys() == {"size"}
    text = await uploaded(client, alice, b"just text")
    await error_of(await get_media(client, alice, text["id"], "/thumbnail?size=96"), 404)
    await error_of(await get_media(client, alice, 999, "/thumbnail?size=96"), 404)


async def _uploads_of(client, user_id: int) -> int:
    """How many media rows the user has (straight from the database)."""
    engine = client.app[keys.DB].engine
    return await engine.fetchval("SELECT count(*) FROM media WHERE uploader_id = $1", user_id)
