"""Rate limits (ratelimit.py): the token bucket in memory and in a real Redis.

The in-memory bucket is driven through `hit_now` with explicit times, so the
window edges are exact. The Redis bucket runs against the Redis on
127.0.0.1:6379 under a key prefix of its own; it refills by Redis's clock, so
its tests move a bucket's stored time back instead of waiting.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from chat_server import ratelimit
from chat_server.config import Rate
from chat_server.ratelimit import (
    MemoryRateLimiter,
    RedisRateLimiter,
    Unlimited,
    make_limiter,
)

REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


# --- in memory -----------------------------------------------------------------------


def test_a_full_bucket_allows_count_hits_then_refuses() -> None:
    limiter = MemoryRateLimiter(Rate(3, 30))
    assert [limiter.hit_now("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit_now("k", 100.0) == pytest.approx(10.0)  # one token per 10 s


def test_the_wait_ends_exactly_when_a_token_is_back() -> None:
    limiter = MemoryRateLimiter(Rate(4, 2))  # 2 tokens a second; times exact in binary
    for _ in range(4):
        assert limiter.hit_now("k", 0.0) == 0.0
    assert limiter.hit_now("k", 0.0) == 0.5
    assert limiter.hit_now("k", 0.25) == 0.25  # half a token back
    assert limiter.hit_now("k", 0.5) == 0.0  # exactly one: allowed, and spent
    assert limiter.hit_now("k", 0.5) == 0.5


def test_a_refused_hit_spends_nothing() -> None:
    limiter = MemoryRateLimiter(Rate(1, 10))
    assert limiter.hit_now("k", 0.0) == 0.0
    for now in (1.0, 2.0, 5.0, 9.0):  # hammering does not push the next token back
        assert limiter.hit_now("k", now) == pytest.approx(10.0 - now)
    assert limiter.hit_now("k", 10.0) == 0.0


def test_an_idle_bucket_refills_only_up_to_its_count() -> None:
    limiter = MemoryRateLimiter(Rate(2, 1))
    assert limiter.hit_now("k", 0.0) == 0.0
    assert limiter.hit_now("k", 0.0) == 0.0
    assert [limiter.hit_now("k", 3600.0) for _ in range(3)] == [0.0, 0.0, 0.5]


def test_keys_have_their_own_buckets() -> None:
    limiter = MemoryRateLimiter(Rate(1, 60))
    assert limiter.hit_now("ip:10.0.0.1", 0.0) == 0.0
    assert limiter.hit_now("ip:10.0.0.1", 0.0) == 60.0
    assert limiter.hit_now("ip:10.0.0.2", 0.0) == 0.0
    assert limiter.hit_now("user:alice", 0.0) == 0.0
    assert limiter.hit_now("ip:10.0.0.2", 1.0) > 0.0
    assert limiter.hit_now("ip:10.0.0.1", 60.0) == 0.0


async def test_hit_uses_the_monotonic_clock() -> None:
    limiter = MemoryRateLimiter(Rate(2, 3600))
    assert await limiter.hit("k") == 0.0
    assert await limiter.hit("k") == 0.0
    assert await limiter.hit("k") == pytest.approx(1800.0, abs=1.0)


def test_idle_full_buckets_are_dropped_at_the_key_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_KEYS", 4)
    limiter = MemoryRateLimiter(Rate(1, 10))
    for i, now in enumerate((0.0, 1.0, 50.0, 55.0)):
        limiter.hit_now(f"k{i}", now)
    limiter.hit_now("new", 58.0)  # k0 and k1 have been full again for a while: forgotten
    assert sorted(limiter._buckets) == ["k2", "k3", "new"]
    assert limiter.hit_now("k3", 58.0) > 0.0  # a bucket still refilling keeps its state


def test_when_no_bucket_is_idle_the_oldest_half_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_KEYS", 4)
    limiter = MemoryRateLimiter(Rate(1, 100))
    for i in range(4):
        limiter.hit_now(f"k{i}", float(i))
    limiter.hit_now("new", 5.0)
    assert sorted(limiter._buckets) == ["k2", "k3", "new"]
    for i in range(100):  # a flood of distinct keys stays bounded
        limiter.hit_now(f"flood{i}", 6.0 + i / 1000)
        assert len(limiter._buckets) <= 4


async def test_unlimited_never_waits() -> None:
    limiter = Unlimited()
    assert [await limiter.hit("k") for _ in range(1000)] == [0.0] * 1000


async def test_make_limiter_picks_the_backend() -> None:
    client = redis.from_url(REDIS_URL)  # connects only when used: not here
    try:
        assert isinstance(make_limiter(None), Unlimited)
        assert isinstance(make_limiter(None, client, "auth"), Unlimited)
        assert isinstance(make_limiter(Rate(1, 1)), MemoryRateLimiter)
        shared = make_limiter(Rate(1, 1), client, "auth")
        assert isinstance(shared, RedisRateLimiter)
        assert shared.prefix == "chat_server:rate:auth:"
    finally:
        await client.aclose()


# --- in Redis ------------------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required under CI=true: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(redis_client: redis.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"chat_test:rate:{secrets.token_hex(6)}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)


async def make_older(client: redis.Redis, key: str, seconds: float) -> None:
    """Move a Redis bucket's last update back, as if `seconds` had passed."""
    at = float(await client.hget(key, "at"))
    await client.hset(key, "at", str(at - seconds))


async def test_redis_bucket_allows_count_hits_then_refuses(
    redis_client: redis.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(Rate(3, 30), redis_client, prefix)
    assert [await limiter.hit("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.hit("k")
    assert 9.5 < wait <= 10.0  # one token per 10 s, minus the few ms since the first hit
    assert await redis_client.exists(f"{prefix}k") == 1


async def test_redis_bucket_refills_with_time(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(Rate(2, 60), redis_client, prefix)
    assert await limiter.hit("k") == 0.0
    assert await limiter.hit("k") == 0.0
    assert await limiter.hit("k") > 29.0
    await make_older(redis_client, f"{prefix}k", 30.0)  # one token back
    assert await limiter.hit("k") == 0.0
    assert await limiter.hit("k") > 29.0
    await make_older(redis_client, f"{prefix}k", 3600.0)  # full again, and no fuller
    assert [await limiter.hit("k") for _ in range(3)][2] > 29.0


async def test_redis_refused_hit_spends_nothing(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(Rate(1, 60), redis_client, prefix)
    assert await limiter.hit("k") == 0.0
    waits = [await limiter.hit("k") for _ in range(5)]
    assert all(59.0 < wait <= 60.0 for wait in waits)
    assert waits == sorted(waits, reverse=True)  # the wait only shrinks


async def test_redis_keys_have_their_own_buckets(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(Rate(1, 60), redis_client, prefix)
    assert await limiter.hit("ip:10.0.0.1") == 0.0
    assert await limiter.hit("ip:10.0.0.1") > 0.0
    assert await limiter.hit("ip:10.0.0.2") == 0.0
    assert await limiter.hit("user:alice") == 0.0


async def test_redis_limit_is_shared_by_processes_and_separate_by_name(
    redis_client: redis.Redis, prefix: str
) -> None:
    # Two limiters on one prefix act as two processes of one deployment.
    here = RedisRateLimiter(Rate(2, 60), redis_client, f"{prefix}auth:")
    there = RedisRateLimiter(Rate(2, 60), redis_client, f"{prefix}auth:")
    other_limit = RedisRateLimiter(Rate(2, 60), redis_client, f"{prefix}messages:")
    assert await here.hit("k") == 0.0
    assert await there.hit("k") == 0.0
    assert await here.hit("k") > 0.0
    assert await there.hit("k") > 0.0
    assert await other_limit.hit("k") == 0.0


async def test_redis_bucket_expires_once_it_would_be_full(
    redis_client: redis.Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(Rate(5, 10), redis_client, prefix)
    await limiter.hit("k")
    ttl_ms = await redis_client.pttl(f"{prefix}k")
    assert 10_000 < ttl_ms <= 11_000  # the time to refill, plus a second's margin


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_redis_falls_back_to_this_process() -> None:
    # Built as the app builds its client (from a URL, short timeouts).
    url = f"redis://127.0.0.1:{closed_port()}/0"
    client = redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        limiter = RedisRateLimiter(Rate(2, 60), client, "chat_test:rate:unreachable:")
        started = time.monotonic()
        assert await limiter.hit("k") == 0.0
        assert await limiter.hit("k") == 0.0
        assert await limiter.hit("k") == pytest.approx(30.0, abs=1.0)  # still limited
        assert await limiter.hit("other") == 0.0
        assert time.monotonic() - started < 1.0  # a refused connection costs no wait
    finally:
        await client.aclose()
