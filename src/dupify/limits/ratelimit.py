"""Request rate limits (fixed windows), throttles and monthly image quotas, in Redis or in this
process.

`Limiter.hit` is a generic throttle (per API key, per login identity, ...), `take`/`give_back`
one that admits only while the window has room (slots held while something is checked);
`reserve_images` and `release_images` keep an account's monthly image count. Every decision is
atomic: one Lua script in Redis (never INCR then EXPIRE), one synchronous step in process
(`dupify.limits.counters`). Every Redis key gets a TTL. When Redis is configured but down,
decisions fall back to this process's counters (a warning is logged and /readyz says so) and
Redis is used again, by itself, once it answers.

A quota counter is created, when missing, from a seed: the images of the request log this UTC
month plus what the seeding process has not logged yet (see `dupify.limits.metering`). Each
Redis counter carries a generation, a random name given when it is created: a restarted (or
flushed) Redis creates the counter anew under another generation, and every process learns
from it that its own reservations not yet logged are missing from the new counter and must be
carried into it. After a Redis outage the counters are dropped and re-seeded the same way.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from dupify.limits.counters import MemoryCounters
from dupify.limits.kv import KvUnavailable, RedisKv, keyed_tag
from dupify.limits.scripts import (
    ADJUST_SCRIPT,
    GIVE_BACK_SCRIPT,
    HIT_READING_SCRIPT,
    HIT_SCRIPT,
    READ_SIGNAL_SCRIPT,
    RESERVE_SCRIPT,
    TAKE_SCRIPT,
)

log = logging.getLogger("dupify.limits.ratelimit")

API_KEY_BUCKET = "key"


@dataclass(frozen=True)
class Decision:
    """One rate-limit decision, with what the response headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: int
    window_s: int

    def headers(self, policy: str = "minute") -> dict[str, str]:
        """API.md section 1: IETF RateLimit (draft 10) and X-RateLimit-*, Retry-After on refusal."""
        headers = {
            "RateLimit-Policy": f'"{policy}";q={self.limit};w={self.window_s}',
            "RateLimit": f'"{policy}";r={self.remaining};t={self.reset_after_s}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_after_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after_s)
        return headers


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    limit: int
    used: int  # after this reservation if allowed, else before it
    # The Redis counter's generation; None when counted in this process (Redis down or absent).
    generation: str | None = None

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class Seed:
    """The images a missing quota counter starts from; `generation` is set by the limiter when
    this seed created the Redis counter (it lost to another seeder's otherwise)."""

    images: int
    generation: str | None = None


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding `now`: [start, end)."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


class Limiter:
    """Rate limits and quotas: Redis when configured and answering, this process otherwise."""

    def __init__(
        self,
        secret: bytes,
        kv: RedisKv | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._kv = kv
        self.memory = MemoryCounters(clock)
        if kv is not None:
            register = kv.client.register_script
            self._hit_script = register(HIT_SCRIPT)
            self._take_script = register(TAKE_SCRIPT)
            self._give_back_script = register(GIVE_BACK_SCRIPT)
            self._reserve_script = register(RESERVE_SCRIPT)
            self._adjust_script = register(ADJUST_SCRIPT)
            self._hit_reading_script = register(HIT_READING_SCRIPT)
            self._read_token_script = register(READ_SIGNAL_SCRIPT)
            kv.on_recovery(self._after_outage)

    kv = property(lambda self: self._kv, doc="The Redis connection, None when embedded.")

    @property
    def backend(self) -> str:
        return "redis" if self._kv is not None else "embedded"

    def status(self) -> str:
        return self._kv.status() if self._kv is not None else "ok (embedded)"

    # Names -------------------------------------------------------------------------------

    def _rate_name(self, bucket: str, identity: str) -> str:
        return f"rl:{bucket}:{keyed_tag(self._secret, 'rl:' + bucket, identity)}"

    def _account_tag(self, account_id: str) -> str:
        return keyed_tag(self._secret, "account", account_id)

    def _quota_name(self, account_id: str, month_start: datetime) -> str:
        return f"quota:{self._account_tag(account_id)}:{month_start:%Y-%m}"

    def _redis_key(self, name: str) -> str:
        assert self._kv is not None
        return f"{self._kv.prefix}:{name}"

    async def _script(self, script: Callable[..., object], name: str, *args: object) -> list[int]:
        """Run one of the registered scripts on `name`'s Redis key; raises KvUnavailable."""
        assert self._kv is not None

        async def run(client: Redis) -> list[int]:
            result: list[int] = await script(  # type: ignore[misc]
                keys=[self._redis_key(name)], args=list(args), client=client
            )
            return result

        return await self._kv.call(run)

    # Rate limits -------------------------------------------------------------------------

    async def hit(
        self, bucket: str, identity: str, limit: int, window_s: int, cost: int = 1
    ) -> Decision:
        """Count one event (of weight `cost`) for `identity` in `bucket`'s fixed window.

        Atomic across every process sharing Redis: of N concurrent hits against a limit of L,
        exactly min(N, L) are allowed. `identity` is stored only as a keyed hash.
        """
        name = self._rate_name(bucket, identity)
        try:
            if self._kv is None:
                raise KvUnavailable("no redis configured")
            raw_count, raw_ttl = await self._script(self._hit_script, name, cost, window_s * 1000)
            count, ttl_s = int(raw_count), int(raw_ttl) / 1000
        except KvUnavailable:
            count, ttl_s = self.memory.hit(name, cost, window_s)
        return decision_of(count <= limit, count, ttl_s, limit, window_s)

    async def hit_reading(
        self, bucket: str, identity: str, window_s: int, token: str, token_ttl_ms: int
    ) -> tuple[int, float, str | None]:
        """`hit` (cost 1) as (count, seconds left) and, in the same Redis round trip, the value
        of `token` (made when missing; dupify.keys.signal); None if counted here (Redis down)."""
        name = self._rate_name(bucket, identity)
        if self._kv is not None:
            keys = [self._redis_key(name), self._redis_key(token)]
            args: list[int | str] = [1, window_s * 1000, secrets.token_hex(16), token_ttl_ms]
            script = self._hit_reading_script
            try:
                count, ttl_ms, value = await self._kv.call(
                    lambda c: script(keys=keys, args=args, client=c)
                )
                return int(str(count)), int(str(ttl_ms)) / 1000, _text(value)
            except KvUnavailable:
                pass
        count, ttl_s = self.memory.hit(name, 1, window_s)
        return count, ttl_s, None

    async def read_token(self, token: str, token_ttl_ms: int) -> str | None:
        """The value of `token` (created when missing) in one round trip; None without Redis."""
        if self._kv is None:
            return None
        keys, args = [self._redis_key(token)], [secrets.token_hex(16), str(token_ttl_ms)]
        try:
            script = self._read_token_script
            return _text(await self._kv.call(lambda c: script(keys=keys, args=args, client=c)))
        except KvUnavailable:
            return None

    async def take(self, bucket: str, identity: str, limit: int, window_s: int) -> Decision:
        """Take one of `limit` slots in `identity`'s window, only while one is free: of N
        concurrent takes, on any number of processes sharing Redis, exactly min(N, free) are
        allowed, and a refusal adds nothing. `give_back` returns a slot."""
        name = self._rate_name(bucket, identity)
        try:
            if self._kv is None:
                raise KvUnavailable("no redis configured")
            taken, count, ttl_ms = await self._script(
                self._take_script, name, limit, window_s * 1000
            )
            allowed, ttl_s = bool(taken), max(0, int(ttl_ms)) / 1000
        except KvUnavailable:
            allowed, count, ttl_s = self.memory.take(name, limit, window_s)
        return decision_of(allowed, int(count), ttl_s, limit, window_s)

    async def give_back(self, bucket: str, identity: str) -> None:
        """Return a slot from `take` (one that turned out not to count)."""
        name = self._rate_name(bucket, identity)
        try:
            if self._kv is None:
                raise KvUnavailable("no redis configured")
            await self._script(self._give_back_script, name)
        except KvUnavailable:
            self.memory.release(name, 1)

    async def forget(self, bucket: str, identity: str) -> None:
        """Remove one identity's counter in `bucket` (e.g. after a successful login).

        Best effort: with Redis down the shared counter stays until its window ends, and the
        caller (a sign-in that succeeded) goes on; `forget_account` instead raises, to retry.
        """
        try:
            await self._delete_names([self._rate_name(bucket, identity)])
        except KvUnavailable:
            log.info("redis down: a %s counter is left to expire with its window", bucket)

    async def forget_keys(self, key_ids: Iterable[str]) -> None:
        """Remove the per-key request counters of these API keys (account deletion)."""
        await self._delete_names([self._rate_name(API_KEY_BUCKET, key_id) for key_id in key_ids])

    async def _delete_names(self, names: list[str]) -> None:
        self.memory.delete(names)
        if self._kv is not None and names:
            keys = [self._redis_key(name) for name in names]

            async def run(client: Redis) -> int:
                return int(await client.unlink(*keys))

            await self._kv.call(run)

    # Monthly image quota -----------------------------------------------------------------

    async def reserve_images(
        self,
        account_id: str,
        images: int,
        limit: int,
        seed: Callable[[], AbstractAsyncContextManager[Seed]],
        now: datetime,
    ) -> QuotaDecision:
        """Reserve `images` of this month's quota, or refuse if that would exceed `limit`.

        `seed()` gives the images already used this month, and is held open while the counter
        is created from it; it is entered only when the counter is missing (first use this
        month, after a restart of the embedded backend or of Redis, or after a Redis outage),
        so the hot path makes no database query.
        """
        month_start, month_end = month_of(now)
        name = self._quota_name(account_id, month_start)
        ttl_ms = math.ceil(((month_end - now).total_seconds() + 86_400) * 1000)
        status, used, generation = await self._reserve(name, images, limit, None, ttl_ms, "")
        if status == -1:
            async with seed() as found:
                fresh = secrets.token_hex(8)
                status, used, generation = await self._reserve(
                    name, images, limit, found.images, ttl_ms, fresh
                )
                if generation == fresh:
                    found.generation = fresh
        return QuotaDecision(allowed=status == 1, limit=limit, used=used, generation=generation)

    async def _reserve(
        self, name: str, images: int, limit: int, seed: int | None, ttl_ms: int, fresh: str
    ) -> tuple[int, int, str | None]:
        if self._kv is not None:
            args = (images, limit, "" if seed is None else seed, ttl_ms, fresh)
            try:
                status, used, generation = await self._script(self._reserve_script, name, *args)
                return int(status), int(used), _text(generation)
            except KvUnavailable:
                pass
        status, used = self.memory.reserve(name, images, limit, seed, ttl_ms / 1000)
        return status, used, None

    async def release_images(
        self, account_id: str, images: int, now: datetime, generation: str | None
    ) -> None:
        """Give back reserved images (their request failed, or was billed less): from the Redis
        counter of `generation` only, else from this process's counter."""
        if images <= 0:
            return
        name = self._quota_name(account_id, month_of(now)[0])
        if self._kv is not None and generation is not None:
            try:
                await self._script(self._adjust_script, name, -images, generation)
                return
            except KvUnavailable:
                pass
        self.memory.release(name, images)

    async def carry_images(
        self, account_id: str, images: int, now: datetime, generation: str
    ) -> None:
        """Add reservations made before the Redis counter of `generation` was created, which
        its seed could not count (they were neither logged nor this process's seed)."""
        if images <= 0 or self._kv is None:
            return
        name = self._quota_name(account_id, month_of(now)[0])
        try:
            await self._script(self._adjust_script, name, images, generation)
        except KvUnavailable:
            # Redis is down for this process: when it is back, the counters are dropped and
            # re-seeded (`_after_outage`), and these reservations are counted then.
            log.info("redis down: carrying reservations into a quota counter is left to re-seed")

    async def quota_generations(
        self, account_ids: Iterable[str], now: datetime
    ) -> dict[str, str | None]:
        """The generation of each account's Redis counter this month (None: missing); {} when
        Redis is absent or down."""
        if self._kv is None:
            return {}
        accounts = list(account_ids)
        month_start = month_of(now)[0]
        keys = [self._redis_key(self._quota_name(account, month_start)) for account in accounts]

        async def run(client: Redis) -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "generation")
                return list(await pipe.execute())

        try:
            found = await self._kv.call(run)
        except KvUnavailable:
            return {}
        return {account: _text(value) for account, value in zip(accounts, found, strict=True)}

    async def forget_account(self, account_id: str, key_ids: Iterable[str] = ()) -> None:
        """Remove the account's quota counters and its keys' rate counters, here and in Redis.

        Raises `KvUnavailable` if Redis is configured and down, so the caller can retry: the
        keys would otherwise live on until their TTL.
        """
        tag = self._account_tag(account_id)
        self.memory.delete_prefix(f"quota:{tag}:")
        await self.forget_keys(key_ids)
        if self._kv is not None:
            await self._kv.scan_delete(self._redis_key(f"quota:{tag}:*"))

    async def _after_outage(self) -> None:
        # Each process counted on its own during the outage, so the Redis counters are stale:
        # drop them (they are re-seeded on next use), and drop this process's fallback quota
        # counters so the next outage re-seeds them too.
        self.memory.delete_prefix("quota:")
        if self._kv is not None:
            removed = await self._kv.scan_delete(self._redis_key("quota:*"))
            log.info("re-seeding monthly quota counters after a redis outage (%d dropped)", removed)


def decision_of(allowed: bool, count: int, ttl_s: float, limit: int, window_s: int) -> Decision:
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=max(0, limit - count),
        reset_after_s=max(1, math.ceil(ttl_s)),
        window_s=window_s,
    )


def _text(value: object) -> str | None:
    """A Redis reply as text: bytes decoded; None, '' or a missing field as None."""
    if isinstance(value, bytes):
        value = value.decode()
    return str(value) if value else None
