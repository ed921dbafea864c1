"""Counters with expiry in this process: the embedded limiter's, and the fallback while Redis is
down. Every method is synchronous (no `await`), hence atomic, and mirrors a Redis script of
`dupify.limits.ratelimit`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class MemoryCounters:
    """Named integer counters, each with an expiry time; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self._operations = 0

    def _live(self, key: str, now: float) -> int | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._values[key]
            return None
        return entry[0]

    def _tick(self, now: float) -> None:
        # Drop expired counters now and then, so keys seen once do not accumulate.
        self._operations += 1
        if self._operations % 1024 == 0:
            self.purge_expired(now)

    def hit(self, key: str, amount: int, window_s: float) -> tuple[int, float]:
        """Add `amount`; the count and the seconds left in the window."""
        now = self._clock()
        self._tick(now)
        current = self._live(key, now)
        if current is None:
            count, expires = amount, now + window_s
        else:
            count, expires = current + amount, self._values[key][1]
        self._values[key] = (count, expires)
        return count, expires - now

    def take(self, key: str, limit: int, window_s: float) -> tuple[bool, int, float]:
        """Add one only while the count is under `limit`: (taken, count, seconds left)."""
        now = self._clock()
        current = self._live(key, now)
        if current is not None and current >= limit:
            return False, current, self._values[key][1] - now
        count, left = self.hit(key, 1, window_s)
        return True, count, left

    def reserve(
        self, key: str, images: int, limit: int, seed: int | None, ttl_s: float
    ) -> tuple[int, int]:
        """Same contract as the Redis script: (-1, 0) needs a seed, (0, used), (1, used)."""
        now = self._clock()
        self._tick(now)
        used = self._live(key, now)
        if used is None:
            if seed is None:
                return -1, 0
            used = seed
            self._values[key] = (seed, now + ttl_s)
        if used + images > limit:
            return 0, used
        self._values[key] = (used + images, self._values[key][1])
        return 1, used + images

    def release(self, key: str, amount: int) -> None:
        """Take `amount` off a live counter, never below zero (a missing one stays missing)."""
        now = self._clock()
        used = self._live(key, now)
        if used is not None:
            self._values[key] = (max(0, used - amount), self._values[key][1])

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._values.pop(key, None)

    def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._values if key.startswith(prefix)]
        self.delete(doomed)
        return len(doomed)

    def purge_expired(self, now: float | None = None) -> int:
        moment = self._clock() if now is None else now
        expired = [key for key, (_, expires) in self._values.items() if expires <= moment]
        self.delete(expired)
        return len(expired)

    def __len__(self) -> int:
        return len(self._values)
