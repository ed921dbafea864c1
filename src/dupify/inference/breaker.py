"""A circuit breaker for the remote inference endpoint: after failures it stays open for a while
(calls fail fast or fall back), then lets one probe through to decide whether to close."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    """Closed: every call goes to the remote. `failures` failed jobs in a row, or one call that
    ran out its whole deadline (`trip`), open it for `reset_s`: calls are refused at once, so a
    dead endpoint costs one timeout rather than one per request. Then one call is let through as
    a probe (half-open); its success closes the breaker, its failure opens it again.

    Single-threaded: used from the event loop only.
    """

    def __init__(
        self,
        failures: int,
        reset_s: float,
        probe_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0 or probe_timeout_s <= 0:
            raise ValueError("need failures >= 1, reset_s > 0 and probe_timeout_s > 0")
        self.failures = failures
        self.reset_s = reset_s
        # A probe whose call was abandoned (its client left before any job was sent) reports
        # nothing; after this long another call may probe instead.
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._state = CLOSED
        self._failed_in_a_row = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None
        self.opened = 0  # times it opened, for the log and /metrics-minded tests

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return self._state

    def retry_after(self) -> int:
        """Whole seconds until the breaker lets a probe through (at least 1)."""
        left = self.reset_s - (self._clock() - self._opened_at)
        return max(1, math.ceil(left))

    def allow(self) -> bool:
        """Whether a call may go to the remote now (in half-open: only the one probe)."""
        state = self.state
        if state == CLOSED:
            return True
        now = self._clock()
        if state == HALF_OPEN and (
            self._probe_at is None or now - self._probe_at > self.probe_timeout_s
        ):
            self._probe_at = now
            return True
        return False

    def success(self) -> None:
        self._state = CLOSED
        self._failed_in_a_row = 0
        self._probe_at = None

    def failure(self, *, trip: bool = False) -> None:
        """A failed job; `trip` opens the breaker whatever the count (a whole deadline lost)."""
        self._failed_in_a_row += 1
        probing = self._probe_at is not None
        if trip or probing or self._failed_in_a_row >= self.failures:
            if self._state != OPEN or probing:
                self.opened += 1
            self._state = OPEN
            self._opened_at = self._clock()
        self._probe_at = None
