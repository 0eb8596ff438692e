"""Sleeping until woken, in a way a cancel always ends."""

from __future__ import annotations

import asyncio
import contextlib


async def until_set(event: asyncio.Event, seconds: float) -> None:
    """Return once `event` is set or `seconds` have passed, whichever is first.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancel that arrives
    in the same turn as the event, and a worker's loop around it then outlives
    the shutdown that cancelled it (the shutdown waits for it forever).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
