"""The API-key guessing throttle: a client address that keeps presenting invalid keys gets 429.

Counted in the shared limiter (Redis when configured, so every process sees one count), under a
keyed hash of the address: the address itself is never stored, logged or written to the database.
While an address is over the limit, every key it presents is refused, valid or not; otherwise
the difference between 429 and 401 would still tell a guesser which key is real.
"""

from __future__ import annotations

from typing import Protocol

from dupify.config import AbuseSettings
from dupify.errors import ApiError

BAD_KEY_BUCKET = "bad-key"


class ThrottleDecision(Protocol):
    @property
    def limit(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_after_s(self) -> int: ...


class Counter(Protocol):
    """What the guard needs of `runtime.limiter` (dupify.ratelimit.Limiter)."""

    async def hit(
        self, bucket: str, identity: str, limit: int, window_s: int, cost: int = 1
    ) -> ThrottleDecision: ...


def _window_s(settings: AbuseSettings) -> int:
    return max(1, int(settings.bad_key_window.total_seconds()))


async def refuse_if_guessing(counter: Counter, address: str, settings: AbuseSettings) -> None:
    """Before a key is looked up: 429 `rate_limited` if this address used up its invalid keys."""
    seen = await counter.hit(
        BAD_KEY_BUCKET, address, settings.bad_key_attempts, _window_s(settings), cost=0
    )
    if seen.remaining <= 0:
        raise ApiError(
            "rate_limited",
            "Too many invalid API keys from this client; try again later.",
            headers={"Retry-After": str(seen.reset_after_s)},
        )


async def count_invalid_key(counter: Counter, address: str, settings: AbuseSettings) -> None:
    """After a malformed, unknown, revoked or expired key: count it against the address."""
    await counter.hit(BAD_KEY_BUCKET, address, settings.bad_key_attempts, _window_s(settings))
