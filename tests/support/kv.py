"""Redis for tests: the shared server's URL, what a key prefix holds (to search it or clear it),
and a private `redis-server` that a test may stop, restart, freeze and thaw."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from support.servers import free_port

SHARED_REDIS_URL = os.environ.get("DUPIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


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


class RedisServer:
    """A redis-server of our own on a free port, with no persistence, that a test may stop,
    restart, freeze (SIGSTOP) and thaw (SIGCONT)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(port=self.port, socket_timeout=0.5)
                client.ping()
                client.close()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
