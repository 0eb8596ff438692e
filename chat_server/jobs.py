"""The background worker of jobs that must survive a restart: an account's erasure.

A job is a `jobs` row, queued in the transaction of the action that asks for
it. Each process runs one worker, which claims a pending job by taking its
lease (`Database.claim_job`) and works it in batches, each batch one
transaction that also renews the lease. A process that dies leaves its lease
to expire; then any worker, on any process, claims the job again and goes on
from where the last committed batch left it. A worker whose lease was taken
meanwhile stops at its next batch without changing anything.

The worker wakes when a job is queued on its own process (`wake`) and polls
every few seconds for jobs queued elsewhere, or left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import events, keys
from .db import Database
from .models import Job, now_ms
from .realtime.hub import Hub
from .waits import until_set

log = logging.getLogger("chat_server.jobs")

POLL_SECONDS = 5.0
# How long a claim lasts without a batch renewing it: a dead node's job waits this long.
LEASE_MS = 60_000
# Messages tombstoned per transaction.
ERASE_BATCH = 200


class JobWorker:
    def __init__(self, db: Database, hub: Hub) -> None:
        self._db = db
        self._hub = hub
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was queued on this process: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.run_one():
                    pass
            except Exception:  # the database away, say: try again at the next poll
                log.exception("background jobs failed; retrying in %.0f s", POLL_SECONDS)
            await until_set(self._wake, POLL_SECONDS)

    async def run_one(self) -> bool:
        """Claims and works one job; False when none was waiting."""
        job = await self._db.claim_job(now_ms(), LEASE_MS)
        if job is None:
            return False
        if job.kind == "erase":
            await self._erase(job)
        else:
            log.error("job %d: unknown kind %r left pending", job.id, job.kind)
        return True

    async def _erase(self, job: Job) -> None:
        """Deletes the user's messages batch by batch, announcing each batch after commit."""
        done = job.done_count
        total = done + await self._db.undeleted_count(job.target_id)
        log.info("erase of user %d: %d of %d messages deleted", job.target_id, done, total)
        while True:
            batch = await self._db.erase_batch(job, LEASE_MS, ERASE_BATCH)
            if batch is None:
                log.warning("erase of user %d: lease lost to another node", job.target_id)
                return
            for tombstone, pos in batch.deleted:
                self._hub.publish(events.message_event("message.deleted", tombstone, pos))
            done += len(batch.deleted)
            total = max(total, done)
            log.info("erase of user %d: %d of %d messages deleted", job.target_id, done, total)
            if batch.done:
                log.info("erase of user %d: done", job.target_id)
                return
            job = dataclasses.replace(job, done_count=done, lease_until=batch.lease_until)


async def job_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the process's worker, from start-up to shutdown."""
    worker = app[keys.JOBS] = JobWorker(app[keys.DB], app[keys.HUB])
    task = asyncio.create_task(worker.run(), name="jobs")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
