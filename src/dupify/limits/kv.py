"""The shared Redis connection: tight timeouts, no retries, a health flag with back-off re-probe.

Every Redis call in the product goes through `RedisKv.call`, which bounds it (socket timeouts
and an outer deadline) and, on any failure, marks Redis down. While it is down callers are told
at once (`KvUnavailable`, no network wait) and fall back (cache misses, per-process limits); a
background task re-probes with exponential back-off and marks Redis up again when PING answers.

Key layout (all under `RedisSettings.key_prefix`, default `dupify`; every key has a TTL):

- `{prefix}:rl:{bucket}:{tag}` fixed-window request counters, TTL = the window;
- `{prefix}:quota:{account tag}:{YYYY-MM}` monthly image counters, TTL = to the month's end + 1 day;
- `{prefix}:cache:{account tag}:{entry}` cached results, TTL = the cache TTL (24 h);
- `{prefix}:auth:signal` the key cache's revocation signal (dupify.keys.signal), TTL = a day.

Tags are keyed hashes (`keyed_tag`), so no account id, key id, email or name is stored in Redis,
and an account's entries can still be found (and deleted) by whoever holds the server secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dupify.aio import cancel_and_wait
from dupify.config import RedisSettings

log = logging.getLogger("dupify.limits.kv")
T = TypeVar("T")


class KvUnavailable(Exception):
    """Redis is down (or was just found to be): the caller takes its documented fallback."""


def keyed_tag(secret: bytes, kind: str, value: str, length: int = 16) -> str:
    """A short keyed hash naming `value` in Redis without revealing it (HMAC-SHA256, hex)."""
    digest = hmac.new(secret, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:length]


def make_redis_client(url: str, settings: RedisSettings) -> Redis:
    """A client for `redis://` or `rediss://` (TLS) that fails fast instead of waiting a minute.

    redis-py's defaults (5 s socket timeouts, 3 retries with back-off) let one call to a hung
    Redis block for far longer than a request may take; here a call fails within `timeout_s`.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("DUPIFY_REDIS_URL must start with redis:// or rediss://")
    # RedisKv admits at most `max_connections` operations at once (a semaphore), so the pool
    # never runs dry; the headroom is for the re-probe.
    pool = ConnectionPool.from_url(
        url,
        max_connections=settings.max_connections + 2,
        socket_connect_timeout=settings.timeout_s,
        socket_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
    )
    client: Redis = Redis(connection_pool=pool, decode_responses=False)
    return client


class RedisKv:
    """One Redis client shared by the limiter and the cache, with a process-wide health flag."""

    def __init__(self, url: str, settings: RedisSettings) -> None:
        self.client = make_redis_client(url, settings)
        self.prefix = settings.key_prefix
        self._settings = settings
        self._up = True
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._on_recovery: list[Callable[[], Awaitable[None]]] = []
        self._closed = False
        self._slots = asyncio.Semaphore(settings.max_connections)

    @property
    def available(self) -> bool:
        return self._up

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def on_recovery(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` each time Redis comes back after an outage (e.g. re-seed counters)."""
        self._on_recovery.append(callback)

    def status(self) -> str:
        """For /readyz: `ok`, or why requests are being served on the fallback."""
        if self._up:
            return "ok"
        since = time.monotonic() - (self._down_since or time.monotonic())
        return (
            f"degraded: redis unreachable for {since:.0f} s; per-process rate limits, "
            "cache bypassed, re-probing"
        )

    async def call(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        """Run one bounded Redis operation, or raise `KvUnavailable` (at once while it is down)."""
        return await self._bounded(operation, self._settings.timeout_s * 2)

    async def _bounded(self, operation: Callable[[Redis], Awaitable[T]], deadline_s: float) -> T:
        if not self._up:
            raise KvUnavailable("redis is down")
        # Waiting for a free slot is congestion in this process, not a Redis fault: it is
        # bounded, and running out of patience falls back for this call without marking Redis
        # down. If Redis hangs, the operations holding slots fail within the timeout and mark it
        # down, and every waiter then gives up at once (the check below).
        try:
            await asyncio.wait_for(self._slots.acquire(), self._settings.timeout_s * 4)
        except TimeoutError as exc:
            raise KvUnavailable("too many redis operations in flight") from exc
        try:
            if not self._up:
                raise KvUnavailable("redis is down")
            # The socket timeouts bound each read; the deadline bounds the whole operation (a
            # pipeline or script may read more than once).
            return await asyncio.wait_for(operation(self.client), deadline_s)
        except (asyncio.CancelledError, KvUnavailable):
            raise
        except Exception as exc:
            self._mark_down(exc)
            raise KvUnavailable(str(exc) or type(exc).__name__) from exc
        finally:
            self._slots.release()

    def _mark_down(self, exc: BaseException) -> None:
        if self._up:
            log.warning(
                "redis unavailable (%s: %s): falling back to per-process rate limits and no cache",
                type(exc).__name__,
                str(exc)[:200] or "timed out",
            )
            self._up = False
            self._down_since = time.monotonic()
        if (self._probe is None or self._probe.done()) and not self._closed:
            self._probe = asyncio.get_running_loop().create_task(
                self._reprobe(), name="redis-probe"
            )

    async def _reprobe(self) -> None:
        delay = self._settings.probe_interval_s
        while not self._closed:
            await asyncio.sleep(delay)
            # Idle pooled connections may lead to a Redis that has since restarted: each would
            # fail once on its next use and mark Redis down again. Close them; calls reconnect.
            with contextlib.suppress(Exception):
                await self.client.connection_pool.disconnect(inuse_connections=False)
            try:
                await asyncio.wait_for(self.client.ping(), self._settings.timeout_s * 2)
            except asyncio.CancelledError:
                raise
            except Exception:  # still down: wait longer, up to the ceiling
                delay = min(delay * 2, self._settings.probe_max_interval_s)
                continue
            self._up = True
            self._down_since = None
            log.warning("redis reachable again: shared rate limits and cache resumed")
            for callback in self._on_recovery:
                try:
                    await callback()
                except Exception:
                    log.exception("redis recovery hook failed")
            if self._up:
                return
            # A hook's Redis call failed and marked Redis down again. `_mark_down` saw this
            # task still running and started no other probe, so this one keeps probing.
            delay = self._settings.probe_interval_s

    async def check(self) -> bool:
        """One PING now (for start-up and tests); marks the flag like any other call."""
        try:
            await self.call(lambda client: client.ping())
        except KvUnavailable:
            return False
        return True

    async def scan_delete(self, pattern: str) -> int:
        """Delete every key matching `pattern` (SCAN + UNLINK in batches); the count removed."""

        async def run(client: Redis) -> int:
            removed = 0
            async for batch in _batches(client.scan_iter(match=pattern, count=500), 500):
                removed += int(await client.unlink(*batch))
            return removed

        # A scan takes several round trips: each is bounded by the socket timeout, the whole by
        # a deadline that allows for a large keyspace (account deletion is not on a hot path).
        return await self._bounded(run, max(5.0, self._settings.timeout_s * 8))

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._probe)
        with contextlib.suppress(Exception):
            await self.client.aclose(close_connection_pool=True)


async def _batches(items: AsyncIterator[Any], size: int) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
