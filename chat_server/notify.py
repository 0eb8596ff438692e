"""Per-room notification levels and mutes (API.md "Notifications"), and who a new
message notifies.

A member's level is `all`, `mentions` or `none` (by default `all` in a DM and
`mentions` elsewhere); `muted_until` in the future silences the room. The
settings are the member's own, not the room's shared state: a change is no
room event, it goes to the member's connections as `notify`.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from . import events, keys
from .auth import require_auth
from .models import NOTIFY_LEVELS
from .rooms import as_member
from .validation import Validator, path_id, read_json

TIME_RULE = "an ISO 8601 time with its offset (2030-01-01T00:00:00Z), or null"
LATEST_TIME_MS = 253_370_764_800_000  # 9999-01-01T00:00:00Z: far enough, and printable


def parse_time(value: object) -> int | None:
    """Epoch ms of an ISO 8601 time with an offset; ValueError otherwise."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(TIME_RULE)
    parsed = datetime.fromisoformat(value)
    ms = int(parsed.timestamp() * 1000)
    if parsed.tzinfo is None or not 0 <= ms <= LATEST_TIME_MS:
        raise ValueError(TIME_RULE)
    return ms


async def put_notify(request: web.Request) -> web.Response:
    """PUT /rooms/{id}/notify `{level, muted_until?}`: both are replaced (an absent
    `muted_until` unmutes). Members only: 404/403 as for any non-member."""
    me = await require_auth(request)
    room_id = path_id(request, "room_id")
    body = await read_json(request)
    v = Validator(body)
    level = v.choice("level", NOTIFY_LEVELS, required=True)
    muted_until = None
    if body.get("muted_until") is not None:
        try:
            muted_until = parse_time(body["muted_until"])
        except ValueError:
            v.errors["muted_until"] = TIME_RULE
    v.check()
    app = request.app
    room = await as_member(
        app, room_id, me.user_id, app[keys.DB].set_notify(room_id, me.user_id, level, muted_until)
    )
    settings = room.to_json()["notify"]
    app[keys.HUB].publish(events.notify(me.user_id, room_id, settings))
    return web.json_response(settings)
