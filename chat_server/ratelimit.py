"""Rate limits behind one small interface: `await limiter.hit(key)`.

A token bucket per key: `count` tokens, refilled at `count / per_seconds` per
second. `hit` spends one token and returns 0.0, or returns how many seconds
until one is available (the request is then refused and spends nothing).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .config import Rate

# Buckets kept in memory before idle (full) ones are dropped: bounds memory
# against a flood of distinct keys (client IPs, usernames).
MAX_TRACKED_KEYS = 100_000


class RateLimiter(Protocol):
    async def hit(self, key: str) -> float: ...


class Unlimited:
    async def hit(self, key: str) -> float:
        return 0.0


class MemoryRateLimiter:
    def __init__(self, rate: Rate) -> None:
        self.capacity = float(rate.count)
        self.refill_per_second = rate.count / rate.per_seconds
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    async def hit(self, key: str) -> float:
        return self.hit_now(key, time.monotonic())

    def hit_now(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.refill_per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.refill_per_second
        if len(self._buckets) >= MAX_TRACKED_KEYS and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled completely; they hold no information."""
        full_after = self.capacity / self.refill_per_second
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= MAX_TRACKED_KEYS:  # still full: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[MAX_TRACKED_KEYS // 2 :]
            self._buckets = dict(keep)


# How long a shared-limit call may wait for Redis before this process decides
# alone, and how long it then decides alone before asking Redis again.
REDIS_TIMEOUT = 0.1
BACKOFF_SECONDS = 1.0

# The same token bucket, kept in Redis so every process shares one limit.
# Redis's own clock is used, so processes with skewed clocks agree.
_REDIS_BUCKET = """
local capacity = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_second)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / per_second
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_second * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis; falls back to this process's own buckets if Redis is away.

    A Redis that does not answer within REDIS_TIMEOUT counts as away (a stalled
    Redis must not stall sends and logins, DESIGN.md invariant 11), and is not
    asked again for BACKOFF_SECONDS: meanwhile each process limits on its own.
    """

    def __init__(self, rate: Rate, client: Redis, prefix: str) -> None:
        self.rate = rate
        self.client = client
        self.prefix = prefix
        self.fallback = MemoryRateLimiter(rate)
        self._script = client.register_script(_REDIS_BUCKET)
        self._skip_until = 0.0  # monotonic time before which Redis is not asked

    async def hit(self, key: str) -> float:
        now = time.monotonic()
        if now < self._skip_until:
            return self.fallback.hit_now(key, now)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):  # not wait_for: see waits.until_set
                wait = await self._script(
                    keys=[f"{self.prefix}{key}"],
                    args=[self.rate.count, self.rate.count / self.rate.per_seconds],
                )
        except (RedisError, OSError, TimeoutError):
            self._skip_until = time.monotonic() + BACKOFF_SECONDS
            return self.fallback.hit_now(key, time.monotonic())
        return float(wait)


def make_limiter(
    rate: Rate | None, redis_client: Redis | None = None, name: str = ""
) -> RateLimiter:
    """No limit, a shared Redis limit (with a Redis client), or this process's own."""
    if rate is None:
        return Unlimited()
    if redis_client is not None:
        return RedisRateLimiter(rate, redis_client, f"chat_server:rate:{name}:")
    return MemoryRateLimiter(rate)
