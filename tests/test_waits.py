"""A worker's sleep until woken (waits.until_set) ends on a cancel, whenever it comes."""

from __future__ import annotations

import asyncio

from chat_server.waits import until_set

# A guard against a hang, not a timing assertion.
HANG = 5.0


async def test_a_cancel_that_comes_with_the_wake_up_ends_the_loop():
    """Shutdown cancels the worker loops; a cancel arriving in the same turn as a
    wake-up must still end them (with 3.11's wait_for the loop went round again
    and the shutdown waited for it forever)."""
    wake, asleep, rounds = asyncio.Event(), asyncio.Event(), 0

    async def worker_loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            wake.clear()
            asleep.set()  # the loop runs on into its sleep before anyone else runs
            await until_set(wake, 60)

    task = asyncio.create_task(worker_loop())
    await asyncio.wait_for(asleep.wait(), HANG)
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=HANG)
    assert done and task.cancelled() and rounds == 1


async def test_it_returns_when_set_or_when_the_time_is_up():
    wake = asyncio.Event()
    waiting = asyncio.create_task(until_set(wake, 60))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(waiting, HANG)
    await asyncio.wait_for(until_set(asyncio.Event(), 0.01), HANG)  # time up: returns
