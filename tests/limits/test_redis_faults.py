"""Redis faults while requests flow (a redis-server of the test's own): stopped and restarted,
frozen with SIGSTOP and thawed. The API keeps answering without 5xx or stalls, says so in
/readyz, and resumes shared limits and caching by itself."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from dupify.config import RedisSettings
from dupify.limits.kv import KvUnavailable, RedisKv
from dupify.limits.ratelimit import Limiter
from support.api import Api
from support.kv import RedisServer
from support.samples import noise_png
from support.waiting import wait_until

# No request may take longer than this, whatever Redis does (the must-hold of issue 4).
STALL_LIMIT_S = 1.0


def fault_settings(server: RedisServer) -> dict[str, Any]:
    return {
        "redis_url": server.url,
        "redis": {"timeout_s": 0.2, "probe_interval_s": 0.2, "probe_max_interval_s": 0.4},
        "plans": {"free": {"requests_per_minute": 100_000}},
    }


class Traffic:
    """Requests in a loop from a few concurrent clients, each timed, until stopped."""

    def __init__(self, api: Api, key: str) -> None:
        self.api = api
        self.auth = {"Authorization": f"Bearer {key}"}
        self.results: list[tuple[int, float, str]] = []
        self._running = True
        self._image = base64.b64encode(noise_png(32, 32, seed=99)).decode()

    async def _client(self, index: int) -> None:
        while self._running:
            started = time.monotonic()
            if index % 2:
                response = await self.api.client.get("/v1/models", headers=self.auth)
            else:
                response = await self.api.client.post(
                    "/v1/embeddings", json={"input": self._image}, headers=self.auth
                )
            self.results.append(
                (response.status_code, time.monotonic() - started, response.request.url.path)
            )
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._client(index)) for index in range(3)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    def check(self) -> None:
        assert len(self.results) > 20, "too little traffic to tell anything"
        statuses = {status for status, _, _ in self.results}
        assert statuses == {200}, statuses
        slowest = max(duration for _, duration, _ in self.results)
        assert slowest < STALL_LIMIT_S, f"a request stalled for {slowest:.2f} s"


async def wait_until_redis_is_used(api: Api) -> None:
    limiter = api.app.state.runtime.limiter
    await wait_until(lambda: limiter.status() == "ok", "redis used again after it came back", 10)


async def cache_states(api: Api, key: str, image: bytes) -> list[str]:
    states = []
    for _ in range(2):
        response = await api.client.post(
            "/v1/embeddings",
            json={"input": base64.b64encode(image).decode()},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        states.append(response.headers["X-Cache"])
    return states


async def readiness(api: Api) -> dict[str, str]:
    response = await api.client.get("/readyz")
    assert response.status_code == 200, response.text  # degraded, still ready
    checks: dict[str, str] = response.json()["checks"]
    return checks


async def test_redis_stopped_and_restarted_while_requests_flow(
    api_factory: Callable[..., Any],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dupify.limits.kv")
    async with api_factory(**fault_settings(redis_server)) as api:
        key = api.new_key()
        assert await cache_states(api, key, noise_png(32, 32, seed=1)) == ["miss", "hit"]
        async with Traffic(api, key) as traffic:
            await asyncio.sleep(0.3)
            redis_server.stop()
            await asyncio.sleep(1.0)
            checks = await readiness(api)
            assert checks["cache"].startswith("degraded: redis unreachable")
            assert checks["rate_limits"].startswith("degraded: redis unreachable")
            redis_server.start()  # a new, empty Redis on the same port
            await wait_until_redis_is_used(api)
            await asyncio.sleep(0.3)
        traffic.check()
        assert "redis unavailable" in caplog.text
        assert "redis reachable again" in caplog.text
        assert (await readiness(api))["cache"] == "ok"
        # One outage, one warning: connections to the old server must not fail again after.
        assert await cache_states(api, key, noise_png(32, 32, seed=4)) == ["miss", "hit"]
        assert caplog.text.count("redis unavailable") == 1, caplog.text
        assert await cache_states(api, key, noise_png(32, 32, seed=2)) == ["miss", "hit"]


async def test_redis_frozen_for_seconds_while_requests_flow(
    api_factory: Callable[..., Any], redis_server: RedisServer
) -> None:
    async with api_factory(**fault_settings(redis_server)) as api:
        key = api.new_key()
        async with Traffic(api, key) as traffic:
            await asyncio.sleep(0.3)
            redis_server.freeze()
            try:
                await asyncio.sleep(2.5)
                assert (await readiness(api))["rate_limits"].startswith("degraded")
            finally:
                redis_server.thaw()
            await wait_until_redis_is_used(api)
            await asyncio.sleep(0.3)
        traffic.check()
        assert await cache_states(api, key, noise_png(32, 32, seed=3)) == ["miss", "hit"]


async def test_limits_fall_back_to_this_process_while_redis_is_down(
    api_factory: Callable[..., Any], redis_server: RedisServer
) -> None:
    settings = fault_settings(redis_server)
    settings["plans"] = {"free": {"requests_per_minute": 3, "images_per_month": 2}}
    async with api_factory(**settings) as api:
        key = api.new_key()
        auth = {"Authorization": f"Bearer {key}"}
        redis_server.stop()
        statuses = [
            (await api.client.get("/v1/models", headers=auth)).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        images = [base64.b64encode(noise_png(24, 24, seed=s)).decode() for s in (7, 8)]
        other = {"Authorization": f"Bearer {api.new_key()}"}
        ok = await api.client.post("/v1/embeddings", json={"input": images}, headers=other)
        assert ok.status_code == 200, ok.text
        assert ok.headers["X-Cache"] == "miss"
        over = await api.client.post("/v1/embeddings", json={"input": images[:1]}, headers=other)
        assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"


async def test_redis_comes_back_even_if_a_recovery_hook_fails_once(
    redis_server: RedisServer,
) -> None:
    kv = RedisKv(
        redis_server.url,
        RedisSettings(timeout_s=0.2, probe_interval_s=0.05, probe_max_interval_s=0.1),
    )
    recoveries = 0

    async def flaky_hook() -> None:
        # The first recovery's hook meets a Redis error (as a flapping Redis would give it),
        # which marks Redis down again from inside the probe.
        nonlocal recoveries
        recoveries += 1
        if recoveries == 1:
            await kv.call(lambda client: client.eval("return redis.error_reply('flap')", 0))

    kv.on_recovery(flaky_hook)
    try:
        redis_server.stop()
        assert not await kv.check()
        redis_server.start()
        await wait_until(lambda: kv.available and recoveries >= 2, "redis marked up twice", 10)
        assert await kv.check()
    finally:
        await kv.close()


async def test_forgetting_a_throttle_counter_survives_redis_being_down(
    redis_server: RedisServer,
) -> None:
    """A successful sign-in clears its counter; with Redis down that must not fail the sign-in,
    while account deletion still learns that Redis kept the account's counters (to retry)."""
    kv = RedisKv(redis_server.url, RedisSettings(timeout_s=0.2))
    limiter = Limiter(b"fault-secret-" + b"f" * 24, kv)
    try:
        assert (await limiter.hit("login", "a@example.com|10.0.0.1", 5, 60)).remaining == 4
        redis_server.stop()
        assert (await limiter.hit("login", "a@example.com|10.0.0.1", 5, 60)).remaining == 4
        await limiter.forget("login", "a@example.com|10.0.0.1")
        assert (await limiter.hit("login", "a@example.com|10.0.0.1", 5, 60)).remaining == 4
        with pytest.raises(KvUnavailable):
            await limiter.forget_account("acct_gone", ["key_gone"])
    finally:
        await kv.close()


async def test_no_second_outage_from_connections_to_a_restarted_redis(
    redis_server: RedisServer,
) -> None:
    kv = RedisKv(
        redis_server.url,
        RedisSettings(timeout_s=0.2, probe_interval_s=0.05, probe_max_interval_s=0.1),
    )

    async def write_many() -> list[object]:
        return await asyncio.gather(
            *(
                kv.call(lambda client: client.set("dupify:probe-test", 1, px=1000))
                for _ in range(16)
            ),
            return_exceptions=True,
        )

    try:
        assert await write_many() == [True] * 16  # the pool now holds 16 idle connections
        redis_server.stop()
        assert not await kv.check()
        redis_server.start()
        await wait_until(lambda: kv.available, "redis marked up", 10)
        assert await write_many() == [True] * 16
        assert kv.available
    finally:
        await kv.close()
