"""The key-guessing throttle under concurrent load (issue 17): at most `bad_key_attempts` invalid
keys are looked up per window and address, however many arrive at once, on one process or
several sharing Redis; a client's own valid key is not starved by the counting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from dupify.api import deps
from dupify.config import AbuseSettings
from dupify.keys.format import generate_key
from support.api import Api


class LookupCounter:
    """Wraps the key lookup the API runs: counts calls, and keeps each one in flight a moment so
    that a burst of requests is all under way at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = deps.authenticate

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            time.sleep(0.02)
            return real(*args, **kwargs)

        monkeypatch.setattr(deps, "authenticate", counted)


async def burst(apis: list[Api], keys: list[str]) -> list[int]:
    """One request per key, all at once, from one client address, spread over `apis`."""
    responses = await asyncio.gather(
        *(
            apis[index % len(apis)].client.get(
                "/v1/models", headers={"Authorization": f"Bearer {key}"}
            )
            for index, key in enumerate(keys)
        )
    )
    return [response.status_code for response in responses]


async def test_64_concurrent_invalid_keys_from_one_address_get_exactly_20_lookups(
    api_factory: Callable[..., Any],
    cache_backend: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32 concurrent requests got 37 lookups and 64 got 64 before the first 429: the count came
    after the lookup. Well-formed keys (right checksum), so each one reaches the database."""
    lookups = LookupCounter(monkeypatch)
    async with api_factory(**cache_backend) as api:
        assert api.settings.abuse.bad_key_attempts == 20
        statuses = await burst([api], [generate_key() for _ in range(64)])
    assert lookups.calls == 20
    assert sorted(statuses) == [401] * 20 + [429] * 44


async def test_processes_sharing_redis_share_the_guessing_budget(
    api_factory: Callable[..., Any],
    cache_backend: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not cache_backend:
        pytest.skip("the embedded limiter is per process by design")
    lookups = LookupCounter(monkeypatch)
    async with AsyncExitStack() as stack:
        apis = [await stack.enter_async_context(api_factory(**cache_backend)) for _ in range(2)]
        statuses = await burst(apis, [generate_key() for _ in range(64)])
    assert lookups.calls == 20
    assert sorted(statuses) == [401] * 20 + [429] * 44


async def test_a_burst_with_a_valid_key_is_not_starved_by_the_count(
    api_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request holds a slot only until its key is found genuine, and the same key from the
    same address waits for the first verdict instead of taking a slot of its own: a client with
    more requests in flight than the limit is not refused, before or after guesses."""
    lookups = LookupCounter(monkeypatch)
    settings = {
        "abuse": AbuseSettings(bad_key_attempts=3),
        "plans": {"free": {"requests_per_minute": 1000}},
    }
    async with api_factory(**settings) as api:
        key = api.new_key()
        assert await burst([api], [key] * 32) == [200] * 32
        # One lookup; the key cache answers the rest, trusting it only while the revocation
        # signal is unchanged (tests/keys/test_key_cache.py, tests/server/test_revocation_*).
        assert lookups.calls == 1
        assert await burst([api], [generate_key() for _ in range(3)]) == [401] * 3
        assert await burst([api], [generate_key()]) == [429]
        # The address is out of slots: its known key still works; a new one does not.
        assert await burst([api], [key] * 8) == [200] * 8
        assert await burst([api], [api.new_key()]) == [429]
