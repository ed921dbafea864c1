"""The memory bound under many concurrent uploads: request-body bytes one process holds at once.

Every image request reserves room for its body before reading it (its declared length, or the
body cap when it declares none) and gives the room back when the request ends. While the room is
full a request waits, unread, in arrival order (its bytes stay in the kernel's socket buffers,
and TCP holds its client back); one that cannot get room within `wait_s` is answered 503
`overloaded` with `Retry-After`, and its body is never read. A request alone may always take
the whole room, so a body up to the cap is never refused for its size alone. The room is what
makes the server's resident memory a function of its caps rather than of its clients:
docs/operations.md, "Memory bound".
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable

from dupify.errors import ApiError


class BodyRoom:
    """A byte budget shared by the requests of one process (the event loop's; not thread-safe)."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        if capacity < 1 or wait_s < 0:
            raise ValueError("need capacity >= 1 byte and wait_s >= 0")
        self.capacity = capacity
        self.wait_s = wait_s
        self.held = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def reserve(self, size: int) -> int:
        """Room for `size` bytes (at most the capacity), waiting in line for it; returns what
        was reserved, to be given back with `release`. Raises `overloaded` past `wait_s`."""
        size = max(0, min(size, self.capacity))
        if size == 0:
            return 0  # nothing to hold (a body refused unread): never waits in line
        if not self._waiting and self._fits(size):
            self.held += size
            return size
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as it gave up: pass the room on
            if isinstance(exc, TimeoutError):
                raise ApiError(
                    "overloaded",
                    "the server is holding as many uploads as it has room for; retry shortly",
                    headers={"Retry-After": str(max(1, math.ceil(self.wait_s)))},
                ) from None
            raise
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)
        return size

    async def hold(
        self, declared: str | None, cap: int, finishers: list[Callable[[], None]]
    ) -> None:
        """Room for one request's body (`declared`: its Content-Length header), given back by
        the callback it adds to `finishers` (run when the request has ended)."""
        held = await self.reserve(body_size_to_reserve(declared, cap))
        finishers.append(lambda: self.release(held))

    def release(self, size: int) -> None:
        """Give back what `reserve` returned, and let the requests next in line in."""
        self.held = max(0, self.held - size)
        while self._waiting:
            size_next, waiter = self._waiting[0]
            if waiter.done():  # timed out or cancelled, not yet removed by its owner
                self._waiting.popleft()
                continue
            if not self._fits(size_next):
                break  # first come, first served: no smaller body overtakes it
            self._waiting.popleft()
            self.held += size_next
            waiter.set_result(None)

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.capacity


def body_size_to_reserve(declared: str | None, cap: int) -> int:
    """What a request's body may occupy: its declared length, or the cap when it declares none;
    nothing for one declared over the cap (it is refused without being kept)."""
    if declared is not None and declared.isdigit():
        size = int(declared)
        return 0 if size > cap else size
    return cap
