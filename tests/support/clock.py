"""Test helper: a clock a test moves by hand (`clock.now += 30`), for code that takes `clock=`."""

from __future__ import annotations


class Clock:
    """Monotonic seconds that pass only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
