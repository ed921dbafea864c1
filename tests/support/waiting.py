"""Test helper: wait for something another task or thread does, without a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    condition: Callable[[], object], what: str = "the condition", limit_s: float = 20.0
) -> None:
    """Let other tasks run until `condition()` holds; the limit only stops a broken test from
    hanging."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)
