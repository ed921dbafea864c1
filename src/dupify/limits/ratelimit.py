"""Request rate limits (fixed windows) and monthly image quotas, in Redis or in this process.

`Limiter.hit` is a generic throttle (per API key, per login identity, ...); `reserve_images` and
`release_images` keep an account's monthly image count. Both are atomic: one Lua script per
decision in Redis (never INCR then EXPIRE), one synchronous critical section (no `await` inside)
in process. Every Redis key gets a TTL. When Redis is configured but down, decisions fall back to
this process's counters (a warning is logged and /readyz says so) and Redis is used again, by
itself, once it answers.

Quota counters are seeded, when missing, from the request log (`request_logs.images` this UTC
month) plus this process's unflushed rows, so the quota counts exactly what `/v1/usage` and the
portal show. After a Redis outage the Redis counters are dropped and re-seeded the same way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from dupify.limits.kv import KvUnavailable, RedisKv, keyed_tag

log = logging.getLogger("dupify.limits.ratelimit")

# KEYS[1] counter; ARGV: amount, window in ms. INCRBY and the TTL in one atomic step; the TTL is
# set whenever the key has none, so no counter can outlive its window.
_HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
"""

# KEYS[1] month counter; ARGV: images, limit, seed ('' = none yet), ttl in ms.
# Returns {-1, 0}: the counter is missing and the caller must seed it; {0, used}: refused;
# {1, used}: reserved. A seed is written only if the key is still missing (first seeder wins).
_RESERVE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[3] == '' then return {-1, 0} end
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
local used = tonumber(redis.call('GET', KEYS[1]))
local images = tonumber(ARGV[1])
if used + images > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], images)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return {1, used}
"""

# KEYS[1] month counter; ARGV: images. Gives back a reservation, never below zero.
_RELEASE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local used = redis.call('DECRBY', KEYS[1], ARGV[1])
if used < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') used = 0 end
return used
"""

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

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding `now`: [start, end)."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


class MemoryCounters:
    """Counters with expiry in this process; every method is synchronous, hence atomic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self._operations = 0

    def _live(self, key: str, now: float) -> int | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._values[key]
            return None
        return entry[0]

    def _tick(self, now: float) -> None:
        # Drop expired counters now and then, so keys seen once do not accumulate.
        self._operations += 1
        if self._operations % 1024 == 0:
            self.purge_expired(now)

    def hit(self, key: str, amount: int, window_s: float) -> tuple[int, float]:
        """Add `amount`; the count and the seconds left in the window."""
        now = self._clock()
        self._tick(now)
        current = self._live(key, now)
        if current is None:
            count, expires = amount, now + window_s
        else:
            count, expires = current + amount, self._values[key][1]
        self._values[key] = (count, expires)
        return count, expires - now

    def reserve(
        self, key: str, images: int, limit: int, seed: int | None, ttl_s: float
    ) -> tuple[int, int]:
        """Same contract as the Redis script: (-1, 0) needs a seed, (0, used), (1, used)."""
        now = self._clock()
        self._tick(now)
        used = self._live(key, now)
        if used is None:
            if seed is None:
                return -1, 0
            used = seed
            self._values[key] = (seed, now + ttl_s)
        if used + images > limit:
            return 0, used
        self._values[key] = (used + images, self._values[key][1])
        return 1, used + images

    def release(self, key: str, images: int) -> None:
        now = self._clock()
        used = self._live(key, now)
        if used is not None:
            self._values[key] = (max(0, used - images), self._values[key][1])

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._values.pop(key, None)

    def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._values if key.startswith(prefix)]
        self.delete(doomed)
        return len(doomed)

    def purge_expired(self, now: float | None = None) -> int:
        moment = self._clock() if now is None else now
        expired = [key for key, (_, expires) in self._values.items() if expires <= moment]
        self.delete(expired)
        return len(expired)

    def __len__(self) -> int:
        return len(self._values)


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
        self._hit_script = kv.client.register_script(_HIT_SCRIPT) if kv else None
        self._reserve_script = kv.client.register_script(_RESERVE_SCRIPT) if kv else None
        self._release_script = kv.client.register_script(_RELEASE_SCRIPT) if kv else None
        if kv is not None:
            kv.on_recovery(self._after_outage)

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

    # Rate limits -------------------------------------------------------------------------

    async def hit(
        self, bucket: str, identity: str, limit: int, window_s: int, cost: int = 1
    ) -> Decision:
        """Count one event (of weight `cost`) for `identity` in `bucket`'s fixed window.

        Atomic across every process sharing Redis: of N concurrent hits against a limit of L,
        exactly min(N, L) are allowed. `identity` is stored only as a keyed hash.
        """
        name = self._rate_name(bucket, identity)
        window_ms = window_s * 1000
        count: int
        ttl_s: float
        if self._kv is not None and self._hit_script is not None:
            script = self._hit_script
            try:

                async def run(client: Redis) -> list[int]:
                    result: list[int] = await script(
                        keys=[self._redis_key(name)], args=[cost, window_ms], client=client
                    )
                    return result

                raw_count, raw_ttl = await self._kv.call(run)
                count, ttl_s = int(raw_count), int(raw_ttl) / 1000
            except KvUnavailable:
                count, ttl_s = self.memory.hit(name, cost, window_s)
        else:
            count, ttl_s = self.memory.hit(name, cost, window_s)
        return Decision(
            allowed=count <= limit,
            limit=limit,
            remaining=max(0, limit - count),
            reset_after_s=max(1, math.ceil(ttl_s)),
            window_s=window_s,
        )

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
        seed: Callable[[], Awaitable[int]],
        now: datetime,
    ) -> QuotaDecision:
        """Reserve `images` of this month's quota, or refuse if that would exceed `limit`.

        `seed()` returns the images already recorded this month; it is called only when the
        counter is missing (first use this month, after a restart of the embedded backend, or
        after a Redis outage), so the hot path makes no database query.
        """
        month_start, month_end = month_of(now)
        name = self._quota_name(account_id, month_start)
        ttl_s = (month_end - now).total_seconds() + 86_400
        status, used = await self._reserve(name, images, limit, None, ttl_s)
        if status == -1:
            status, used = await self._reserve(name, images, limit, await seed(), ttl_s)
        return QuotaDecision(allowed=status == 1, limit=limit, used=used)

    async def _reserve(
        self, name: str, images: int, limit: int, seed: int | None, ttl_s: float
    ) -> tuple[int, int]:
        if self._kv is not None and self._reserve_script is not None:
            script = self._reserve_script

            async def run(client: Redis) -> list[int]:
                args = [images, limit, "" if seed is None else seed, math.ceil(ttl_s * 1000)]
                result: list[int] = await script(
                    keys=[self._redis_key(name)], args=args, client=client
                )
                return result

            try:
                status, used = await self._kv.call(run)
                return int(status), int(used)
            except KvUnavailable:
                pass
        return self.memory.reserve(name, images, limit, seed, ttl_s)

    async def release_images(self, account_id: str, images: int, now: datetime) -> None:
        """Give back a reservation whose request failed (its log row records no images)."""
        if images <= 0:
            return
        name = self._quota_name(account_id, month_of(now)[0])
        if self._kv is not None and self._release_script is not None:
            script = self._release_script

            async def run(client: Redis) -> int:
                result: int = await script(
                    keys=[self._redis_key(name)], args=[images], client=client
                )
                return result

            try:
                await self._kv.call(run)
                return
            except KvUnavailable:
                pass
        self.memory.release(name, images)

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
        # drop them (they are re-seeded from the request log on next use), and drop this
        # process's fallback quota counters so the next outage re-seeds them too.
        self.memory.delete_prefix("quota:")
        if self._kv is not None:
            removed = await self._kv.scan_delete(self._redis_key("quota:*"))
            log.info("re-seeding monthly quota counters after a redis outage (%d dropped)", removed)
