"""The API-key guessing throttle: a client address that keeps presenting invalid keys gets 429.

Counted in the shared limiter (Redis when configured, so every process sees one count), under a
keyed hash of the address. While an address is over the limit, every key it presents is refused,
valid or not; otherwise the difference between 429 and 200 would still confirm a right guess.

The address is never stored, logged or written to the database. Each process keeps, in memory
only, the addresses that sent it an invalid key within the window ("suspects"), and asks the
limiter about those alone: requests from everyone else cost no extra round trip. A blocked
address thus gets at most one more lookup per process per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from dupify.config import AbuseSettings
from dupify.errors import ApiError

BAD_KEY_BUCKET = "bad-key"
MAX_SUSPECTS = 100_000  # per process; beyond it the oldest are forgotten (memory stays bounded)


class ThrottleDecision(Protocol):
    @property
    def remaining(self) -> int: ...
    @property
    def reset_after_s(self) -> int: ...


class Counter(Protocol):
    """What the guard needs of `runtime.limiter` (dupify.limits.ratelimit.Limiter)."""

    async def hit(
        self, bucket: str, identity: str, limit: int, window_s: int, cost: int = 1
    ) -> ThrottleDecision: ...


class KeyGuessingGuard:
    """One per process (on the Runtime); see the module docstring."""

    def __init__(
        self, settings: AbuseSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.window_s = max(1, int(settings.bad_key_window.total_seconds()))
        self._clock = clock
        self._suspects: dict[str, float] = {}  # address -> until (monotonic seconds)

    def _is_suspect(self, address: str) -> bool:
        until = self._suspects.get(address)
        if until is None:
            return False
        if until <= self._clock():
            del self._suspects[address]
            return False
        return True

    def _suspect(self, address: str) -> None:
        now = self._clock()
        self._suspects.pop(address, None)
        # Every entry lasts the same window and a repeat moves to the end, so insertion order is
        # expiry order: drop from the front what has expired, or the oldest while over the cap.
        # (Amortised O(1) per bad key: no scan of the whole map while an attack fills it.)
        while self._suspects:
            oldest, until = next(iter(self._suspects.items()))
            if until > now and len(self._suspects) < MAX_SUSPECTS:
                break
            del self._suspects[oldest]
        self._suspects[address] = now + self.window_s

    async def refuse_if_guessing(self, counter: Counter, address: str) -> None:
        """Before a key is looked up: 429 `rate_limited` if this address used up its attempts."""
        if not self._is_suspect(address):
            return
        seen = await counter.hit(
            BAD_KEY_BUCKET, address, self.settings.bad_key_attempts, self.window_s, cost=0
        )
        if seen.remaining <= 0:
            raise ApiError(
                "rate_limited",
                "Too many invalid API keys from this client; try again later.",
                headers={"Retry-After": str(seen.reset_after_s)},
            )

    async def count_invalid_key(self, counter: Counter, address: str) -> None:
        """After a malformed, unknown, revoked or expired key: count it against the address."""
        self._suspect(address)
        await counter.hit(BAD_KEY_BUCKET, address, self.settings.bad_key_attempts, self.window_s)
