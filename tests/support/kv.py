"""Fixtures for the limits, quota and cache tests (loaded by conftest.py): the `cache_backend`
parameter (embedded and Redis: the same tests run on both) and a private `redis-server` that a
test may stop, restart, freeze and thaw."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
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


@pytest.fixture(params=["embedded", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings overrides for one backend. Redis is the shared one (127.0.0.1:6379, as on CI)
    under a key prefix unique to this test, removed afterwards."""
    if request.param == "embedded":
        yield {}
        return
    prefix = f"dupifytest{secrets.token_hex(6)}"
    # A generous timeout: these tests are about shared, exact counting, and the shared Redis and
    # this machine may be busy; a slow answer would (correctly) fall back to per-process limits.
    # The fault tests (tests/limits/test_redis_faults.py) use tight timeouts on their own Redis.
    yield {"redis_url": SHARED_REDIS_URL, "redis": {"key_prefix": prefix, "timeout_s": 2.0}}
    delete_prefix(SHARED_REDIS_URL, prefix)


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
