"""Builds this process's rate limiter and result cache: Redis if configured, else embedded."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from dupify.cache import EmbeddedCache, RedisCache, ResultCache
from dupify.config import Settings
from dupify.kv import RedisKv
from dupify.ratelimit import Limiter

log = logging.getLogger("dupify.kv")


async def open_backends(
    settings: Settings, secret: bytes, stack: AsyncExitStack
) -> tuple[Limiter, ResultCache]:
    """The limiter and cache for `settings`; Redis being down at start-up is not fatal (the
    process serves on its fallbacks and re-probes, as it would after a later outage)."""
    ttl_s = settings.cache.ttl.total_seconds()
    if not settings.redis_url:
        cache = EmbeddedCache(secret, max_bytes=settings.cache.embedded_max_bytes, ttl_s=ttl_s)
        return Limiter(secret), cache
    kv = RedisKv(settings.redis_url, settings.redis)
    stack.push_async_callback(kv.close)
    if not await kv.check():
        log.warning("redis not reachable at start-up; serving on per-process fallbacks")
    return Limiter(secret, kv), RedisCache(secret, kv, ttl_s=ttl_s)


async def forget_account(
    limiter: Limiter, cache: ResultCache, account_id: str, key_ids: list[str]
) -> None:
    """Remove an account's cached results, quota counters and its keys' rate counters now
    (account deletion). Raises `dupify.kv.KvUnavailable` if Redis is down: retry later."""
    await cache.forget_account(account_id)
    await limiter.forget_account(account_id, key_ids)


async def forget_account_from_outside(
    settings: Settings, secret: bytes, account_id: str, key_ids: list[str]
) -> None:
    """The same from a process that serves nothing (`dupify account delete`): reaches Redis if
    configured. Embedded entries live in each server's memory; they can no longer be asked for
    (the account's keys are gone) and expire within the cache TTL."""
    async with AsyncExitStack() as stack:
        limiter, cache = await open_backends(settings, secret, stack)
        await forget_account(limiter, cache, account_id, key_ids)
