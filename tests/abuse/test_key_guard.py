"""The key-guessing guard on its own: a slot is taken before each lookup and kept only by an
invalid key, concurrent lookups never outrun the limit, genuine keys are not starved, and the
guard's per-process memory is bounded."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dupify.abuse import guard as guard_module
from dupify.abuse.guard import KeyGuessingGuard
from dupify.config import AbuseSettings
from dupify.errors import ApiError
from dupify.limits.ratelimit import Limiter
from support.clock import Clock

SETTINGS = AbuseSettings(bad_key_attempts=2, bad_key_window=timedelta(seconds=60))


async def evaluate(
    guard: KeyGuessingGuard, limiter: Limiter, address: str, key: str, genuine: bool
) -> None:
    async with guard.evaluating(limiter, address, key) as verdict:
        verdict.genuine = genuine


async def test_an_address_is_refused_after_its_attempts_until_the_window_ends() -> None:
    clock = Clock()
    limiter = Limiter(b"k" * 32, clock=clock)
    guard = KeyGuessingGuard(SETTINGS, clock=clock)
    for n in range(2):
        await evaluate(guard, limiter, "192.0.2.9", f"dpy_wrong{n}", genuine=False)
    with pytest.raises(ApiError) as refused:
        await evaluate(guard, limiter, "192.0.2.9", "dpy_wrong2", genuine=False)
    assert refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "60"
    # While refused, even a genuine key is: 429 vs 200 would reveal a right guess.
    with pytest.raises(ApiError):
        await evaluate(guard, limiter, "192.0.2.9", "dpy_real", genuine=True)
    await evaluate(guard, limiter, "192.0.2.10", "dpy_wrong", genuine=False)  # another address
    clock.now += 61
    await evaluate(guard, limiter, "192.0.2.9", "dpy_wrong3", genuine=False)  # the window is over


async def test_concurrent_invalid_keys_never_outrun_the_limit() -> None:
    """Every lookup holds a slot taken before it: 64 at once get exactly the limit's lookups."""
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(AbuseSettings(bad_key_attempts=20))
    lookups = 0

    async def guess(n: int) -> int:
        nonlocal lookups
        try:
            async with guard.evaluating(limiter, "203.0.113.5", f"dpy_guess{n}") as verdict:
                lookups += 1
                await asyncio.sleep(0.01)  # the lookup: every guess is in flight at once
                verdict.genuine = False
        except ApiError as exc:
            return exc.status
        return 401

    statuses = await asyncio.gather(*(guess(n) for n in range(64)))
    assert lookups == 20
    assert sorted(statuses) == [401] * 20 + [429] * 44


async def test_genuine_keys_give_their_slot_back_and_are_not_starved() -> None:
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    # A burst of one genuine key, far above the limit: the first request's verdict lets the
    # others through (one slot, given back); none of it counts against the address.
    lookups = 0

    async def request() -> None:
        nonlocal lookups
        async with guard.evaluating(limiter, "198.51.100.4", "dpy_real") as verdict:
            lookups += 1
            await asyncio.sleep(0.01)
            verdict.genuine = True

    await asyncio.gather(*(request() for _ in range(32)))
    assert lookups == 32  # every request is still looked up (revocation holds at once)
    # Trusted now: no limiter call at all for this key from this address...
    limiter.memory.delete_prefix("")
    await evaluate(guard, limiter, "198.51.100.4", "dpy_real", genuine=True)
    assert len(limiter.memory) == 0
    # ... and the address's slots are all free for invalid keys.
    for n in range(2):
        await evaluate(guard, limiter, "198.51.100.4", f"dpy_wrong{n}", genuine=False)
    with pytest.raises(ApiError):
        await evaluate(guard, limiter, "198.51.100.4", "dpy_wrong2", genuine=False)
    # A genuine key it already knew from this address still works while the address is
    # refused; the same key from another address is not trusted there.
    await evaluate(guard, limiter, "198.51.100.4", "dpy_real", genuine=True)
    assert guard_module._pair("198.51.100.5", "dpy_real") not in guard.trusted
    assert all("dpy_real" not in pair for pair in guard.trusted._until)  # hashes only


async def test_a_trusted_key_that_stops_working_counts_again() -> None:
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    await evaluate(guard, limiter, "192.0.2.3", "dpy_soon_revoked", genuine=True)
    await evaluate(guard, limiter, "192.0.2.3", "dpy_soon_revoked", genuine=False)  # forgotten
    for _ in range(2):
        await evaluate(guard, limiter, "192.0.2.3", "dpy_soon_revoked", genuine=False)
    with pytest.raises(ApiError):
        await evaluate(guard, limiter, "192.0.2.3", "dpy_soon_revoked", genuine=False)


async def test_a_lookup_that_fails_gives_its_slot_back() -> None:
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            async with guard.evaluating(limiter, "192.0.2.4", "dpy_any"):
                raise RuntimeError("database down")
    await evaluate(guard, limiter, "192.0.2.4", "dpy_wrong", genuine=False)


async def test_the_trusted_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "MAX_TRUSTED", 3)
    limiter = Limiter(b"k" * 32)
    guard = KeyGuessingGuard(SETTINGS)
    for n in range(10):
        await evaluate(guard, limiter, f"198.51.100.{n}", "dpy_real", genuine=True)
    assert len(guard.trusted) <= 3
    newest = next(reversed(guard.trusted._until))
    assert newest == guard_module._pair("198.51.100.9", "dpy_real")  # the newest are kept


async def test_expired_trust_is_forgotten_as_new_pairs_arrive() -> None:
    clock = Clock()
    limiter = Limiter(b"k" * 32, clock=clock)
    guard = KeyGuessingGuard(SETTINGS, clock=clock)  # a 60 s window

    async def use(n: int) -> None:
        await evaluate(guard, limiter, f"198.51.100.{n}", "dpy_real", genuine=True)

    for n in range(5):
        await use(n)
    clock.now += 30
    await use(0)  # a repeat: its time starts again
    clock.now += 29
    await use(77)
    clock.now += 2  # past the first five's time, within the repeat's
    await use(78)
    assert list(guard.trusted._until) == [
        guard_module._pair(f"198.51.100.{n}", "dpy_real") for n in (0, 77, 78)
    ]
