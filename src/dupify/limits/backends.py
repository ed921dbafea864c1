"""Builds this process's rate limiter and result cache: Redis if configured, else embedded."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from dupify.config import Settings
from dupify.limits.cache import EmbeddedCache, RedisCache, ResultCache
from dupify.limits.kv import RedisKv
from dupify.limits.ratelimit import Limiter

log = logging.getLogger("dupify.limits.kv")


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
