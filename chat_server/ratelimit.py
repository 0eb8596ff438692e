"""Rate limits behind one small interface: `await limiter.hit(key)`.

A token bucket per key: `count` tokens, refilled at `count / per_seconds` per
second. `hit` spends one token and returns 0.0, or returns how many seconds
until one is available (the request is then refused and spends nothing).
"""

from __future__ import annotations

import time
from typing import Protocol

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


def make_limiter(rate: Rate | None) -> RateLimiter:
    return Unlimited() if rate is None else MemoryRateLimiter(rate)
