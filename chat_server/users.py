"""/users routes: profiles and user search."""

from __future__ import annotations

from aiohttp import web

from . import keys
from .auth import require_auth
from .errors import InvalidRequest, NotFound
from .paging import decode_cursor, page, page_limit
from .validation import Validator, path_id, read_json


async def get_me(request: web.Request) -> web.Response:
    me = await require_auth(request)
    user = await request.app[keys.DB].get_user(me.user_id)
    if user is None:
        raise NotFound()
    return web.json_response(user.to_json())


async def patch_me(request: web.Request) -> web.Response:
    me = await require_auth(request)
    body = await read_json(request)
    v = Validator(body)
    display_name = v.string("display_name", min_len=1, max_len=64, strip=True)
    bio = v.string("bio", max_len=1000)
    avatar_media_id = v.integer("avatar_media_id", nullable=True)
    v.check()
    db = request.app[keys.DB]
    set_avatar = "avatar_media_id" in body
    if avatar_media_id is not None:
        media = await db.get_media(avatar_media_id)
        if media is None or media.uploader_id != me.user_id or not media.is_image:
            raise InvalidRequest.fields({"avatar_media_id": "an image you uploaded"})
    user = await db.update_user(
        me.user_id,
        display_name=display_name,
        bio=bio,
        avatar_media_id=avatar_media_id,
        set_avatar=set_avatar,
    )
    return web.json_response(user.to_json())


async def get_user(request: web.Request) -> web.Response:
    await require_auth(request)
    user = await request.app[keys.DB].get_user(path_id(request, "user_id"))
    if user is None:
        raise NotFound("no such user")
    return web.json_response(user.to_json())


async def search_users(request: web.Request) -> web.Response:
    await require_auth(request)
    v = Validator(request.query, query=True)
    prefix = v.string("q", max_len=200, strip=True) or ""
    limit = page_limit(v)
    after = decode_cursor(v, numeric=False) or ""
    v.check()
    users = await request.app[keys.DB].search_users(prefix, after, limit + 1)
    return web.json_response(page(users, limit, lambda user: user.username))
