"""Test helper: settings for a `cache_backend` parameter (embedded, or Redis under a unique key
prefix) and what a backend holds, for tests that search it for data that must not be there."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import redis

from support.kv import SHARED_REDIS_URL, delete_prefix

BACKENDS = ["embedded", "redis"]


def backend_overrides(kind: str) -> Iterator[dict[str, Any]]:
    """Settings overrides for one cache/limiter backend, for a fixture to yield from; the Redis
    keys are removed afterwards. Use: `@pytest.fixture(params=BACKENDS)` in the test module."""
    if kind == "embedded":
        yield {}
        return
    prefix = f"dupifyprivacy{secrets.token_hex(6)}"
    yield {"redis_url": SHARED_REDIS_URL, "redis": {"key_prefix": prefix}}
    delete_prefix(SHARED_REDIS_URL, prefix)


def redis_contents(overrides: dict[str, Any]) -> dict[bytes, bytes]:
    """Every key under the test's prefix with its value (strings as is, other types as their
    members joined), or {} for the embedded backend."""
    if "redis_url" not in overrides:
        return {}
    client = redis.Redis.from_url(overrides["redis_url"], socket_timeout=2)
    try:
        found: dict[bytes, bytes] = {}
        for key in client.scan_iter(match=f"{overrides['redis']['key_prefix']}:*", count=500):
            kind = client.type(key)
            parts: list[object]
            if kind == b"string":
                parts = [client.get(key)]
            elif kind == b"hash":
                parts = [item for pair in client.hgetall(key).items() for item in pair]
            elif kind == b"zset":
                parts = list(client.zrange(key, 0, -1))
            elif kind == b"list":
                parts = list(client.lrange(key, 0, -1))
            elif kind == b"set":
                parts = list(client.smembers(key))
            else:
                parts = []
            found[_bytes(key)] = b" ".join(_bytes(part) for part in parts)
        return found
    finally:
        client.close()


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode()
