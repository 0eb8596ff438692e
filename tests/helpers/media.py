"""Uploads and downloads of media, as the web client makes them."""

from __future__ import annotations

from typing import Any

import aiohttp

MEDIA = "/api/v1/media"


async def upload(client, account, data: bytes, filename="file.bin", content_type="x/unknown"):
    form = aiohttp.FormData(quote_fields=False)  # as browsers send names: raw UTF-8
    form.add_field("file", data, filename=filename, content_type=content_type)
    return await client.post(MEDIA, data=form, headers=account.headers)


async def uploaded(client, account, data: bytes, **kwargs: Any) -> dict[str, Any]:
    response = await upload(client, account, data, **kwargs)
    assert response.status == 201, await response.text()
    return await response.json()


async def get_media(client, account, media_id, suffix="", **headers):
    return await client.get(f"{MEDIA}/{media_id}{suffix}", headers={**account.headers, **headers})
