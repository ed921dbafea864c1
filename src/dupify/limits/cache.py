"""The 24-hour result cache (PRIVACY.md row 4): keyed hashes in, results out, never images.

`cache_key` names an entry by a keyed hash (HMAC-SHA256 with the server secret) of the account,
the image bytes, the model version and the parameters, so an entry can be neither read by
another account nor traced back to an image by anyone without the secret. Values are result
bytes (a float32 vector, a JSON document) chosen by the route. Two backends:

- `EmbeddedCache`: in this process, bounded by bytes (least recently used goes first), TTL
  honoured on read, expired entries removed by `purge_expired()` (the retention job calls it;
  it also runs as entries are written).
- `RedisCache`: `SET ... PX ttl`, `MGET`; an entry lives at `{prefix}:cache:{account tag}:{hash}`.
  If Redis is down every lookup is a miss and writes are skipped (never an error, never a wait).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis

from dupify.context import RequestContext
from dupify.limits.kv import KvUnavailable, RedisKv, keyed_tag

ResultT = TypeVar("ResultT")


def account_tag(secret: bytes, account_id: str) -> str:
    """The account's part of every cache key (and of its quota counters): a keyed hash."""
    return keyed_tag(secret, "account", account_id)


# Images up to this many bytes in all are hashed on the event loop: the bench's 68 KB JPEG takes
# about 40 us, while handing it to a thread cost a cache hit about a fifth of its CPU time in
# wake-ups and the GIL going back and forth (docs/performance.md, "Levers"). Larger uploads go
# to a thread.
INLINE_HASH_BYTES = 128 * 1024


def cache_key(
    secret: bytes,
    account_id: str,
    image: bytes,
    model_version: str,
    params: Mapping[str, Any],
) -> str:
    """`{account tag}:{entry hash}`: HMAC-SHA256 over the account, model, parameters and image.

    CPU-bound for large images: call it off the event loop (`cache_keys` does).
    """
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    header = json.dumps(
        {"account": account_id, "model": model_version, "params": dict(params)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    mac.update(len(header).to_bytes(8, "big"))  # length-prefixed: no ambiguity with the image
    mac.update(header.encode())
    mac.update(image)
    return f"{account_tag(secret, account_id)}:{mac.hexdigest()}"


async def cache_keys(
    secret: bytes,
    account_id: str,
    images: Sequence[bytes],
    model_version: str,
    params: Mapping[str, Any],
) -> list[str]:
    """`cache_key` for each image: in a worker thread (hashing 10 MB takes a while), or on the
    loop when the images are small enough that the thread would cost more than the hash."""

    def compute() -> list[str]:
        return [cache_key(secret, account_id, image, model_version, params) for image in images]

    if sum(len(image) for image in images) <= INLINE_HASH_BYTES:
        return compute()
    return await asyncio.to_thread(compute)


def x_cache(hits: int, total: int) -> str:
    """The X-Cache value: `hit` (all cached), `miss` (none), `partial` (a batch with both)."""
    if total > 0 and hits == total:
        return "hit"
    return "partial" if hits > 0 else "miss"


class ResultCache(Protocol):
    """What routes and the account-deletion code use; both backends implement it."""

    backend: str

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None: ...

    async def forget_account(self, account_id: str) -> int: ...

    def purge_expired(self) -> int: ...

    def status(self) -> str: ...


class EmbeddedCache:
    """In-process LRU bounded by the bytes it holds; entries expire after their TTL."""

    backend = "embedded"

    def __init__(
        self,
        secret: bytes,
        *,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value) + len(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        found: list[bytes | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                found.append(None)
            elif entry[1] <= now:
                self._drop(key)
                found.append(None)
            else:
                self._entries.move_to_end(key)
                found.append(entry[0])
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        expires = self._clock() + (self._ttl_s if ttl_s is None else min(ttl_s, self._ttl_s))
        for key, value in items.items():
            size = len(value) + len(key)
            if size > self._max_bytes:
                continue  # would evict everything and still not fit
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (bytes(value), expires)
            self._bytes += size
        if self._bytes > self._max_bytes:
            self.purge_expired()
        while self._bytes > self._max_bytes and self._entries:
            self._drop(next(iter(self._entries)))  # least recently used first

    async def forget_account(self, account_id: str) -> int:
        prefix = account_tag(self._secret, account_id) + ":"
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def purge_expired(self) -> int:
        """Remove every entry past its TTL now; returns how many (the retention job calls this)."""
        now = self._clock()
        expired = [key for key, (_, expires) in self._entries.items() if expires <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def status(self) -> str:
        return "ok (embedded)"


class RedisCache:
    """Entries in Redis with a TTL each (Redis expires them itself); misses while Redis is down."""

    backend = "redis"

    def __init__(self, secret: bytes, kv: RedisKv, *, ttl_s: float) -> None:
        self._secret = secret
        self._kv = kv
        self._ttl_ms = max(1, round(ttl_s * 1000))

    def _key(self, key: str) -> str:
        return self._kv.key("cache", key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        names = [self._key(key) for key in keys]

        async def run(client: Redis) -> list[bytes | None]:
            values = await client.mget(names)
            return [value if isinstance(value, bytes) else None for value in values]

        try:
            return await self._kv.call(run)
        except KvUnavailable:
            return [None] * len(keys)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        if not items:
            return
        ttl_ms = self._ttl_ms if ttl_s is None else min(self._ttl_ms, max(1, round(ttl_s * 1000)))

        async def run(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self._key(key), value, px=ttl_ms)
                await pipe.execute()

        try:
            await self._kv.call(run)
        except KvUnavailable:
            return  # a result not cached is only a slower next request

    async def forget_account(self, account_id: str) -> int:
        """Delete the account's entries now; raises `KvUnavailable` if Redis is down (retry)."""
        return await self._kv.scan_delete(self._key(account_tag(self._secret, account_id) + ":*"))

    def purge_expired(self) -> int:
        return 0  # Redis removes expired keys itself (every key is written with PX)

    def status(self) -> str:
        return self._kv.status()


async def cached_results(
    ctx: RequestContext,
    cache: ResultCache,
    secret: bytes,
    images: Sequence[bytes],
    model_version: str,
    params: Mapping[str, Any],
    compute: Callable[[list[int]], Awaitable[Sequence[bytes | ResultT]]],
) -> tuple[list[bytes | ResultT], str]:
    """The per-image cache step of an image route: one result per image, in order, and X-Cache.

    Looks every image up (keyed by the caller's account, the bytes, `model_version` and
    `params`); calls `compute(indices)` only for the misses, once per distinct image (a batch
    may repeat one), which returns their results in the same order (decoding and inference
    happen there, so a hit skips both); stores the `bytes` ones (anything else, e.g. a per-image
    error, is passed through and never cached: a decode timeout may not recur); and records
    `ctx.cached_images` (the usage-log row's count). A batch with hits and misses is `partial`.
    """
    if not images:  # e.g. every image of an /v1/analyze request was a URL that failed
        ctx.cached_images = 0
        return [], "miss"
    account_id = ctx.caller
    keys = await cache_keys(secret, account_id, images, model_version, params)
    found = await cache.get_many(keys)
    missing = [index for index, value in enumerate(found) if value is None]
    results: list[bytes | ResultT | None] = list(found)
    if missing:
        first_of: dict[str, int] = {}  # each missing key -> the first image with it
        for index in missing:
            first_of.setdefault(keys[index], index)
        computed = await compute(list(first_of.values()))
        if len(computed) != len(first_of):
            raise ValueError("compute() must return one result per index it is given")
        by_key = dict(zip(first_of, computed, strict=True))
        for index in missing:
            results[index] = by_key[keys[index]]
        await cache.set_many({k: value for k, value in by_key.items() if isinstance(value, bytes)})
    hits = len(images) - len(missing)
    complete = [b"" if value is None else value for value in results]
    ctx.cached_images = hits
    return complete, x_cache(hits, len(images))
