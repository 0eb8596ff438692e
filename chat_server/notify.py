"""Per-room notification levels and mutes (API.md "Notifications"), and who a new
message notifies.

A member's level is `all`, `mentions` or `none` (by default `all` in a DM and
`mentions` elsewhere); `muted_until` in the future silences the room. The
settings are the member's own, not the room's shared state: a change is no
room event, it goes to the member's connections as `notify`.
"""

from __future__ import annotations

import re
from datetime import datetime

from aiohttp import web

from . import events, keys
from .auth import require_auth
from .models import NOTIFY_LEVELS
from .rooms import as_member
from .validation import Validator, path_id, read_json

TIME_RULE = "an RFC 3339 time with its offset (2030-01-01T00:00:00Z), or null"
LATEST_TIME_MS = 253_370_764_800_000  # 9999-01-01T00:00:00Z: far enough, and printable
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
LEAP_SECOND = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:)60")


def parse_time(value: object) -> int:
    """Epoch ms of an RFC 3339 time (an offset required); ValueError otherwise.

    Any such time is taken: a leap second reads as the second before it, and
    times before 1970 or after 9999-01-01 as those bounds (the mute is over,
    or lasts).
    """
    text = value.upper() if isinstance(value, str) else ""
    if len(text) > 64 or not RFC3339.fullmatch(text):
        raise ValueError(TIME_RULE)
    parsed = datetime.fromisoformat(LEAP_SECOND.sub(r"\g<1>59", text))
    try:
        ms = int(parsed.timestamp() * 1000)
    except (OverflowError, ValueError):  # beyond what datetime holds in UTC
        ms = 0 if parsed.year < 1970 else LATEST_TIME_MS
    return min(max(ms, 0), LATEST_TIME_MS)


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
