"""The limiter and the result cache on their own, on both backends: atomic counts, TTLs, the
memory bound, and account deletion removing every entry and counter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from dupify.config import Settings
from dupify.limits.backends import open_backends
from dupify.limits.cache import EmbeddedCache, ResultCache, cache_key
from dupify.limits.counters import MemoryCounters
from dupify.limits.ratelimit import API_KEY_BUCKET, Limiter, Seed
from support.clock import Clock

SECRET = b"backend-test-secret-" + b"y" * 20
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def settings_for(overrides: dict[str, Any], **more: Any) -> Settings:
    return Settings(_env_file=None, env="test", secret_key=SECRET.decode(), **overrides, **more)  # type: ignore[call-arg]


@pytest.fixture
async def backends(cache_backend: dict[str, Any]) -> AsyncIterator[tuple[Limiter, ResultCache]]:
    async with AsyncExitStack() as stack:
        yield await open_backends(settings_for(cache_backend), SECRET, stack)


async def test_200_concurrent_hits_against_a_limit_of_50_admit_exactly_50(
    backends: tuple[Limiter, ResultCache],
) -> None:
    limiter, _ = backends
    decisions = await asyncio.gather(
        *(limiter.hit(API_KEY_BUCKET, "key_concurrent", 50, 60) for _ in range(200))
    )
    assert sum(decision.allowed for decision in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))
    refused = [decision for decision in decisions if not decision.allowed]
    assert all(d.remaining == 0 and 1 <= d.reset_after_s <= 60 for d in refused)
    assert refused[0].headers()["Retry-After"] == str(refused[0].reset_after_s)


async def test_two_processes_sharing_redis_share_one_count(cache_backend: dict[str, Any]) -> None:
    if not cache_backend:
        pytest.skip("the embedded backend is per process by design")
    async with AsyncExitStack() as stack:
        first, _ = await open_backends(settings_for(cache_backend), SECRET, stack)
        second, _ = await open_backends(settings_for(cache_backend), SECRET, stack)
        decisions = await asyncio.gather(
            *(
                (first if index % 2 else second).hit(API_KEY_BUCKET, "key_shared", 50, 60)
                for index in range(200)
            )
        )
        assert sum(decision.allowed for decision in decisions) == 50
        grants = await asyncio.gather(
            *(
                (first if index % 2 else second).reserve_images("acct_shared", 1, 10, _seed(0), NOW)
                for index in range(40)
            )
        )
        assert sum(grant.allowed for grant in grants) == 10


def _seed(
    value: int, calls: list[int] | None = None
) -> Callable[[], AbstractAsyncContextManager[Seed]]:
    """A seed of `value` images (a real one reads the request log; see dupify.limits.metering)."""

    @asynccontextmanager
    async def seed() -> AsyncIterator[Seed]:
        if calls is not None:
            calls.append(value)
        yield Seed(value)

    return seed


async def test_quota_reservations_are_atomic_seeded_and_released(
    backends: tuple[Limiter, ResultCache],
) -> None:
    limiter, _ = backends
    seeds: list[int] = []
    seed = _seed(7, seeds)
    grants = await asyncio.gather(
        *(limiter.reserve_images("acct_quota", 1, 10, seed, NOW) for _ in range(20))
    )
    assert sum(grant.allowed for grant in grants) == 3  # 7 already recorded this month
    assert seeds  # seeded from the log once the counter was found missing
    refused = await limiter.reserve_images("acct_quota", 1, 10, seed, NOW)
    assert not refused.allowed and refused.used == 10 and refused.left == 0
    await limiter.release_images("acct_quota", 2, NOW, grants[0].generation)
    assert (await limiter.reserve_images("acct_quota", 2, 10, seed, NOW)).allowed
    assert not (await limiter.reserve_images("acct_quota", 1, 10, seed, NOW)).allowed
    next_month = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert (await limiter.reserve_images("acct_quota", 10, 10, _seed(0), next_month)).allowed


async def test_cache_returns_results_per_key_and_keys_are_keyed_hashes(
    backends: tuple[Limiter, ResultCache],
) -> None:
    _, cache = backends
    image = b"\xff\xd8 pretend image bytes"
    mine = cache_key(SECRET, "acct_a", image, "dupify-visual-1@1", {"result": "embedding"})
    theirs = cache_key(SECRET, "acct_b", image, "dupify-visual-1@1", {"result": "embedding"})
    other_model = cache_key(SECRET, "acct_a", image, "dupify-visual-2@1", {"result": "embedding"})
    other_params = cache_key(SECRET, "acct_a", image, "dupify-visual-1@1", {"result": "labels"})
    assert len({mine, theirs, other_model, other_params}) == 4
    assert "acct_a" not in mine and image.hex() not in mine
    await cache.set_many({mine: b"result-bytes"})
    assert await cache.get_many([mine, theirs, other_model]) == [b"result-bytes", None, None]


async def test_account_deletion_removes_cache_entries_and_counters(
    cache_backend: dict[str, Any], backends: tuple[Limiter, ResultCache]
) -> None:
    limiter, cache = backends
    gone = cache_key(SECRET, "acct_gone", b"img", "m@1", {})
    kept = cache_key(SECRET, "acct_kept", b"img", "m@1", {})
    await cache.set_many({gone: b"x", kept: b"y"})
    await limiter.hit(API_KEY_BUCKET, "key_gone", 5, 60)
    await limiter.hit(API_KEY_BUCKET, "key_kept", 5, 60)
    await limiter.reserve_images("acct_gone", 3, 10, _seed(0), NOW)
    await limiter.reserve_images("acct_kept", 3, 10, _seed(0), NOW)

    assert await cache.forget_account("acct_gone") == 1
    await limiter.forget_account("acct_gone", ["key_gone"])

    assert await cache.get_many([gone, kept]) == [None, b"y"]
    assert (await limiter.hit(API_KEY_BUCKET, "key_gone", 5, 60)).remaining == 4
    assert (await limiter.hit(API_KEY_BUCKET, "key_kept", 5, 60)).remaining == 3
    fresh = await limiter.reserve_images("acct_gone", 1, 10, _seed(0), NOW)
    assert fresh.used == 1
    if cache_backend:
        client = redis.Redis.from_url(cache_backend["redis_url"])
        prefix = cache_backend["redis"]["key_prefix"]
        stored = [key.decode() for key in client.scan_iter(match=f"{prefix}:*")]
        assert stored, "the redis backend wrote nothing"
        for key in stored:
            assert "acct_" not in key and "key_" not in key  # only keyed hashes name things
            assert client.pttl(key) > 0, f"{key} has no TTL"
        client.close()


async def test_redis_entries_expire_after_the_ttl(cache_backend: dict[str, Any]) -> None:
    if not cache_backend:
        pytest.skip("the embedded TTL is tested with a movable clock below")
    async with AsyncExitStack() as stack:
        settings = settings_for(cache_backend, cache={"ttl": 0.3})
        _, cache = await open_backends(settings, SECRET, stack)
        key = cache_key(SECRET, "acct_ttl", b"img", "m@1", {})
        await cache.set_many({key: b"v"})
        assert await cache.get_many([key]) == [b"v"]
        await asyncio.sleep(0.45)
        assert await cache.get_many([key]) == [None]


async def test_embedded_entries_expire_after_the_ttl_and_purge_removes_them() -> None:
    clock = Clock()
    cache = EmbeddedCache(SECRET, max_bytes=10_000, ttl_s=24 * 3600, clock=clock)
    old = cache_key(SECRET, "acct", b"old", "m@1", {})
    new = cache_key(SECRET, "acct", b"new", "m@1", {})
    await cache.set_many({old: b"1"})
    clock.now += 23 * 3600
    await cache.set_many({new: b"2"})
    assert await cache.get_many([old, new]) == [b"1", b"2"]
    clock.now += 3600 + 1  # old is now 24 h and 1 s old
    assert cache.purge_expired() == 1
    assert len(cache) == 1
    assert await cache.get_many([old, new]) == [None, b"2"]
    clock.now += 24 * 3600
    assert await cache.get_many([new]) == [None]
    assert len(cache) == 0 and cache.size_bytes == 0


async def test_embedded_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    cache = EmbeddedCache(SECRET, max_bytes=3 * (4096 + 81), ttl_s=60)
    keys = [cache_key(SECRET, "acct", bytes([index]), "m@1", {}) for index in range(5)]
    await cache.set_many({keys[0]: b"a" * 4096, keys[1]: b"b" * 4096, keys[2]: b"c" * 4096})
    await cache.get_many([keys[0]])  # keys[0] is now the most recently used
    await cache.set_many({keys[3]: b"d" * 4096})
    assert [value is not None for value in await cache.get_many(keys[:4])] == [
        True,
        False,
        True,
        True,
    ]
    assert cache.size_bytes <= 3 * (4096 + 81)


def test_memory_counters_expire_with_their_window() -> None:
    clock = Clock()
    counters = MemoryCounters(clock)
    assert counters.hit("k", 1, 60) == (1, 60)
    clock.now += 30
    assert counters.hit("k", 1, 60) == (2, 30)
    clock.now += 30
    assert counters.hit("k", 1, 60) == (1, 60)
    clock.now += 61
    assert counters.purge_expired() == 1 and len(counters) == 0


def test_plans_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE", "5")
    monkeypatch.setenv("DUPIFY_PLANS__PRO__IMAGES_PER_MONTH", "42")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.plans["free"].requests_per_minute == 5
    assert settings.plans["free"].images_per_month == 1_000
    assert settings.plans["pro"].requests_per_minute == 600
    assert settings.plans["pro"].images_per_month == 42
    assert settings.plan("no-such-plan") == settings.plans["free"]
    assert Settings(_env_file=None).cache.ttl.total_seconds() == 24 * 3600  # type: ignore[call-arg]
    monkeypatch.setenv("DUPIFY_CACHE__TTL", "3600")
    assert Settings(_env_file=None).cache.ttl.total_seconds() == 3600  # type: ignore[call-arg]
