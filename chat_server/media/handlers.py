"""/media routes: upload, download, thumbnail."""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..auth import require_auth
from ..errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType, error_response
from ..models import Media
from ..validation import path_id
from .ingest import MULTIPART_SLACK, file_part, receive
from .serving import content_disposition, send_file
from .store import MediaStore, storage_error
from .thumbnails import THUMBNAIL_SIZES, cached_thumbnail, make_thumbnail


async def upload(request: web.Request) -> web.StreamResponse:
    me = await require_auth(request)
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("expected multipart/form-data with a part named file")
    limit = request.app[keys.CONFIG].max_upload_bytes
    try:
        if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
            raise PayloadTooLarge(f"upload over {limit} bytes")
        part = await file_part(request, limit)
        media = await receive(request, part, me.user_id, limit)
    except PayloadTooLarge as error:
        # Nothing more is parsed or stored. aiohttp drains what the client still
        # sends to nowhere for at most its lingering time (10 s) and then closes:
        # closing at once makes clients see a connection reset instead of the 413.
        response = error_response(error)
        response.force_close()
        return response
    return web.json_response(media.to_json(), status=201)


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
    return await send_file(
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
    found = await store.run(cached_thumbnail, thumbs, media.sha256, size)
    if found is None:
        async with store.thumbnail_slots:
            try:
                found = await store.run(
                    make_thumbnail, store.blob_path(media.sha256), thumbs, media.sha256, size
                )
            except OSError as exc:
                raise storage_error(exc) from None
    if found is None:
        raise NotFound("this image has no thumbnail")
    path, content_type = found
    return await send_file(request, store, path, content_type, f'"{media.sha256}-{size}"', "inline")
