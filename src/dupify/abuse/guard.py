"""The API-key guessing throttle: at most `bad_key_attempts` invalid keys evaluated per client
address per window; past that, 429.

Each key is looked up under a slot taken from the address's count in the shared limiter (Redis
when configured, so every process sees one count) *before* the lookup, in one atomic step that
takes a slot only while one is free: of any number of concurrent requests, on one process or
many, only as many are looked up as there are free slots, and the rest get 429 at once. A key
that turns out genuine gives its slot back (so does a lookup that fails); an invalid one keeps it.

Valid keys are not starved by the count, though they pass through it:
- concurrent requests that present the same key from the same address wait for the first one's
  verdict instead of each taking a slot: a client's burst takes one slot per process, briefly;
- a key found genuine from an address is not counted again from that address in this process
  for a window after its last genuine use (no limiter call: steady traffic pays no round trip).
  Its lookup still runs on every request, so revocation and suspension hold at once.
While an address has no slot left, every other key it presents is refused, valid or not:
otherwise the difference between 429 and 200 would still confirm a right guess.

The address is never stored, logged or written to the database: the limiter names its count by
a keyed hash, and this process remembers only hashes of (address, key) pairs, in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from dupify.config import AbuseSettings
from dupify.errors import ApiError

BAD_KEY_BUCKET = "bad-key"
MAX_TRUSTED = 100_000  # per process; beyond it the oldest are forgotten (memory stays bounded)


class ThrottleDecision(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def reset_after_s(self) -> int: ...


class Counter(Protocol):
    """What the guard needs of `runtime.limiter` (dupify.limits.ratelimit.Limiter)."""

    async def take(
        self, bucket: str, identity: str, limit: int, window_s: int
    ) -> ThrottleDecision: ...

    async def give_back(self, bucket: str, identity: str) -> None: ...


@dataclass
class Verdict:
    """What the lookup found, told to the guard by its caller: True for a genuine key (suspended
    ones included), False for an invalid one; None if the lookup gave no answer."""

    genuine: bool | None = None


class _RecentPairs:
    """(address, key) hashes, each remembered for a fixed time after it was last added."""

    def __init__(self, lifetime_s: float, clock: Callable[[], float]) -> None:
        self._lifetime_s = lifetime_s
        self._clock = clock
        self._until: dict[str, float] = {}  # pair -> until (monotonic seconds)

    def __contains__(self, pair: str) -> bool:
        until = self._until.get(pair)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[pair]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)

    def add(self, pair: str) -> None:
        now = self._clock()
        self._until.pop(pair, None)
        # Every entry lasts the same time and a repeat moves to the end, so insertion order is
        # expiry order: drop from the front what has expired, or the oldest while over the cap.
        # (Amortised O(1) per addition: no scan of the whole map.)
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now and len(self._until) < MAX_TRUSTED:
                break
            del self._until[oldest]
        self._until[pair] = now + self._lifetime_s

    def discard(self, pair: str) -> None:
        self._until.pop(pair, None)


def _pair(address: str, key: str) -> str:
    return hashlib.blake2b(f"{address}\0{key}".encode(), digest_size=16).hexdigest()


class KeyGuessingGuard:
    """One per process (on the Runtime); see the module docstring."""

    def __init__(
        self, settings: AbuseSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.window_s = max(1, int(settings.bad_key_window.total_seconds()))
        self.trusted = _RecentPairs(self.window_s, clock)
        self._evaluating: dict[str, asyncio.Event] = {}

    @asynccontextmanager
    async def evaluating(self, counter: Counter, address: str, key: str) -> AsyncIterator[Verdict]:
        """Look `key` up inside this block and set the yielded verdict; 429 `rate_limited`
        instead, before the block, if the address has no slot left."""
        pair = _pair(address, key)
        while pair not in self.trusted and (earlier := self._evaluating.get(pair)) is not None:
            await earlier.wait()
        verdict = Verdict()
        if pair in self.trusted:
            yield verdict
            if verdict.genuine is False:  # revoked or expired since: counted from now on
                self.trusted.discard(pair)
            elif verdict.genuine:
                self.trusted.add(pair)
            return
        done = self._evaluating[pair] = asyncio.Event()
        taken = False
        try:
            slot = await counter.take(
                BAD_KEY_BUCKET, address, self.settings.bad_key_attempts, self.window_s
            )
            if not slot.allowed:
                raise ApiError(
                    "rate_limited",
                    "Too many invalid API keys from this client; try again later.",
                    headers={"Retry-After": str(slot.reset_after_s)},
                )
            taken = True
            yield verdict
        finally:
            if verdict.genuine:
                self.trusted.add(pair)
            del self._evaluating[pair]
            done.set()  # the waiters find the pair trusted, or take slots of their own
            if taken and verdict.genuine is not False:
                await counter.give_back(BAD_KEY_BUCKET, address)
