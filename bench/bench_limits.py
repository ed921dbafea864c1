"""What the rate limiter, the quota counter and the result cache add to a request, per backend:
the median time of one call (microseconds) over many sequential calls, embedded and Redis.

    .venv/bin/python bench/bench_limits.py [--redis redis://127.0.0.1:6379/0] [--calls 2000]

Redis keys are written under a random prefix and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from dupify.config import Settings
from dupify.limits.backends import open_backends
from dupify.limits.cache import cache_key
from dupify.limits.ratelimit import Seed

SECRET = secrets.token_bytes(32)


async def median_us(call: Callable[[int], Awaitable[object]], calls: int) -> float:
    timings = []
    for index in range(calls):
        started = time.perf_counter()
        await call(index)
        timings.append((time.perf_counter() - started) * 1e6)
    return statistics.median(timings)


async def measure(settings: Settings, calls: int) -> dict[str, float]:
    vector = np.random.default_rng(0).standard_normal(1024).astype("<f4").tobytes()
    now = datetime.now(UTC)

    @asynccontextmanager
    async def no_history() -> AsyncIterator[Seed]:
        yield Seed(images=0)

    async with AsyncExitStack() as stack:
        limiter, cache = await open_backends(settings, SECRET, stack)
        keys = [cache_key(SECRET, "acct_bench", str(i).encode(), "m@1", {}) for i in range(calls)]
        return {
            "rate limit: hit()": await median_us(
                lambda i: limiter.hit("key", "key_bench", 10**9, 60), calls
            ),
            "quota: reserve_images(1)": await median_us(
                lambda i: limiter.reserve_images("acct_bench", 1, 10**9, no_history, now), calls
            ),
            "cache: set_many (1 vector)": await median_us(
                lambda i: cache.set_many({keys[i]: vector}), calls
            ),
            "cache: get_many (1 hit)": await median_us(lambda i: cache.get_many([keys[i]]), calls),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args()
    prefix = f"dupifybench{secrets.token_hex(4)}"
    embedded = await measure(Settings(_env_file=None), options.calls)  # type: ignore[call-arg]
    shared = await measure(
        Settings(_env_file=None, redis_url=options.redis, redis={"key_prefix": prefix}),  # type: ignore[call-arg]
        options.calls,
    )
    client = redis.Redis.from_url(options.redis)
    leftovers = list(client.scan_iter(match=f"{prefix}:*"))
    if leftovers:
        client.delete(*leftovers)
    client.close()
    table = Table(title=f"median µs per call, {options.calls} sequential calls")
    for column in ("operation", "embedded", "redis (local)"):
        table.add_column(column, justify="right" if column != "operation" else "left")
    for name in embedded:
        table.add_row(name, f"{embedded[name]:.1f}", f"{shared[name]:.1f}")
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
