"""Stopping a background asyncio task: cancel it and wait until it has really finished."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (nothing if None) and wait for it to end, so nothing it holds outlives the
    caller's shutdown; the CancelledError that ends it is expected and not raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
