"""Units and machine facts the settings sections share: MiB, and the cores a process may use."""

from __future__ import annotations

import os

MiB = 1024 * 1024


def available_cores() -> int:
    """CPU cores this process may run on: what a setting of 0 ("one per core") resolves to."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
