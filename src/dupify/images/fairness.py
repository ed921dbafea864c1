"""Sharing the decoder workers between accounts: a fair queue that hands out turns by decode
cost, and each account's allowance of decoder CPU time."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from dupify.errors import ApiError


@dataclass(order=True)
class _Waiter:
    start: float  # the account's virtual start tag: what it had been served when this arrived
    arrival: int  # ties go to the earlier
    cost: int = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class FairQueue:
    """Turns on `slots` workers, fair between accounts by cost, and at most `max_cost` at once.

    Start-time fair queuing: each upload gets a start tag, the larger of the queue's virtual time
    and the finish tag of its account's previous upload; its finish tag adds its cost. A free
    worker takes the waiting upload with the smallest start tag, and the virtual time moves to
    it. So an account's uploads follow one another in cost, while an account that arrives (or
    comes back) starts at the present: a single small upload goes ahead of a backlog of heavy
    ones from another account, which cannot bank credit by waiting either.

    The costs of the uploads running at once stay within `max_cost` (the memory bound), except
    that an upload over it on its own runs when nothing else does. The next upload in fair
    order waits for room rather than being overtaken, so a large upload is never starved.
    """

    def __init__(self, slots: int, max_cost: int) -> None:
        self._slots = slots
        self._max_cost = max_cost
        self._running = 0
        self._running_cost = 0
        self._virtual = 0.0
        self._finish: dict[str, float] = {}  # accounts with work waiting or recently served
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def turn(self, account: str, cost: int) -> AsyncIterator[None]:
        """Wait for this upload's turn, then hold a worker (and its cost) until the block ends."""
        start = max(self._virtual, self._finish.get(account, 0.0))
        self._finish[account] = start + cost
        waiter = _Waiter(
            start, next(self._arrivals), cost, asyncio.get_running_loop().create_future()
        )
        self._waiting.append(waiter)
        self._dispatch()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.cancelled():  # still in line: leave it
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                self._dispatch()
            else:  # granted just as the caller was cancelled
                self._release(cost)
            raise
        try:
            yield
        finally:
            self._release(cost)

    def _release(self, cost: int) -> None:
        self._running -= 1
        self._running_cost -= cost
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and self._running < self._slots:
            nxt = min(self._waiting)
            if nxt.granted.cancelled():  # its caller is gone and will not take the turn
                self._waiting.remove(nxt)
                continue
            if self._running and self._running_cost + nxt.cost > self._max_cost:
                break
            self._waiting.remove(nxt)
            self._running += 1
            self._running_cost += nxt.cost
            self._virtual = nxt.start
            nxt.granted.set_result(None)
        self._forget_idle_accounts()

    def _forget_idle_accounts(self) -> None:
        # An account whose finish tag the virtual time has passed would start at the present
        # anyway; dropping it keeps this map to the accounts with recent work.
        if len(self._finish) > 2 * len(self._waiting) + 64:
            self._finish = {a: f for a, f in self._finish.items() if f > self._virtual}


class CpuAllowance:
    """Each account's decoder CPU time: `per_minute` seconds a minute, with a minute's burst.

    A token bucket per account, charged with the CPU time its decodes really took (measured in
    the worker), so it may go into debt: the account's next request is refused until the debt
    is repaid, with the seconds that takes as `Retry-After`.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._balances: dict[str, tuple[float, float]] = {}  # account -> (seconds left, when)

    def check(self, account: str) -> None:
        """Raise 429 `decode_budget_exceeded` while the account has no CPU time left."""
        left = self._left(account)
        if left > 0:
            return
        retry_after = max(1, math.ceil(-left / self._rate))
        raise ApiError(
            "decode_budget_exceeded",
            f"this account used its {self._capacity:g} s of image decoding a minute; "
            f"retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    def charge(self, account: str, seconds: float) -> None:
        """Take `seconds` of decoder CPU time from the account's allowance."""
        self._balances[account] = (self._left(account) - seconds, self._clock())
        if len(self._balances) > 1024:  # forget the accounts whose allowance is whole again
            self._balances = {
                a: b for a, b in self._balances.items() if self._left(a) < self._capacity
            }

    def _left(self, account: str) -> float:
        left, when = self._balances.get(account, (self._capacity, self._clock()))
        return min(self._capacity, left + (self._clock() - when) * self._rate)
