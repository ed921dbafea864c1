"""The key-guessing guard's per-process memory: only suspects cost a limiter call; it is bounded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dupify.abuse import guard as guard_module
from dupify.abuse.guard import KeyGuessingGuard
from dupify.config import AbuseSettings
from dupify.errors import ApiError
from dupify.limits.ratelimit import Limiter
from support.clock import Clock

SETTINGS = AbuseSettings(bad_key_attempts=2, bad_key_window=timedelta(seconds=60))


async def test_clean_addresses_never_reach_the_limiter() -> None:
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    for _ in range(10):
        await guard.refuse_if_guessing(limiter, "192.0.2.1")
    assert len(limiter.memory) == 0


async def test_an_address_is_refused_after_its_attempts_until_the_window_ends() -> None:
    clock = Clock()
    limiter = Limiter(b"k" * 32, clock=clock)
    guard = KeyGuessingGuard(SETTINGS, clock=clock)
    for _ in range(2):
        await guard.refuse_if_guessing(limiter, "192.0.2.9")
        await guard.count_invalid_key(limiter, "192.0.2.9")
    with pytest.raises(ApiError) as refused:
        await guard.refuse_if_guessing(limiter, "192.0.2.9")
    assert refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "60"
    await guard.refuse_if_guessing(limiter, "192.0.2.10")  # another address is not affected
    clock.now += 61
    await guard.refuse_if_guessing(limiter, "192.0.2.9")  # the window is over


async def test_the_suspect_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "MAX_SUSPECTS", 3)
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    for n in range(10):
        await guard.count_invalid_key(limiter, f"198.51.100.{n}")
    assert len(guard._suspects) <= 3
    assert "198.51.100.9" in guard._suspects  # the newest are kept


async def test_expired_suspects_are_forgotten_as_new_ones_arrive() -> None:
    clock = Clock()
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS, clock=clock)  # a 60 s window
    for n in range(5):
        await guard.count_invalid_key(limiter, f"198.51.100.{n}")
    clock.now += 30
    await guard.count_invalid_key(limiter, "198.51.100.0")  # a repeat: its window starts again
    clock.now += 29
    await guard.count_invalid_key(limiter, "198.51.100.77")
    clock.now += 2  # past the first five's window, within the repeat's
    await guard.count_invalid_key(limiter, "198.51.100.78")
    assert list(guard._suspects) == ["198.51.100.0", "198.51.100.77", "198.51.100.78"]
