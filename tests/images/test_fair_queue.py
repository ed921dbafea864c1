"""The fair queue in front of the decoder workers, and the accounts' allowance of decoder time,
without processes: who gets each turn, the cost bound, cancellation, Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from dupify.errors import ApiError
from dupify.images.fairness import CpuAllowance, FairQueue


class Recorder:
    """Takes turns on a queue and records who got each, in order; a turn lasts until released."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self.order: list[str] = []
        self.running: dict[str, asyncio.Event] = {}

    def start(self, name: str, account: str, cost: int) -> asyncio.Task[None]:
        done = self.running[name] = asyncio.Event()

        async def take_turn() -> None:
            async with self.queue.turn(account, cost):
                self.order.append(name)
                await done.wait()

        return asyncio.create_task(take_turn())

    async def finish(self, name: str) -> None:
        self.running[name].set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_newcomer_goes_ahead_of_another_accounts_backlog() -> None:
    turns = Recorder(FairQueue(slots=1, max_cost=10**12))
    tasks = [turns.start(f"heavy{i}", "heavy", 600) for i in range(5)]
    await settle()
    tasks.append(turns.start("small", "other", 1))
    await settle()
    assert turns.order == ["heavy0"]
    await turns.finish("heavy0")
    assert turns.order == ["heavy0", "small"]
    for name in ["small", "heavy1", "heavy2", "heavy3", "heavy4"]:
        await turns.finish(name)
    await asyncio.gather(*tasks)
    assert turns.order == ["heavy0", "small", "heavy1", "heavy2", "heavy3", "heavy4"]


async def test_two_backlogged_accounts_share_by_cost_not_by_count() -> None:
    turns = Recorder(FairQueue(slots=1, max_cost=10**12))
    tasks = [turns.start(f"big{i}", "big", 300) for i in range(3)]
    tasks += [turns.start(f"small{i}", "small", 100) for i in range(9)]
    await settle()
    for _ in range(12):
        await turns.finish(turns.order[-1])
    await asyncio.gather(*tasks)
    # Three small uploads for each large one: equal cost served to each account.
    assert [name.rstrip("0123456789") for name in turns.order] == [
        "big", "small", "small", "small", "big", "small", "small", "small", "big",
        "small", "small", "small",
    ]  # fmt: skip


async def test_an_account_that_waited_cannot_bank_credit() -> None:
    turns = Recorder(FairQueue(slots=1, max_cost=10**12))
    first = [turns.start(f"a{i}", "a", 100) for i in range(4)]
    await settle()
    for name in ["a0", "a1", "a2"]:
        await turns.finish(name)
    # "b" arrives while a3 runs: it starts level with a3, not with a0 (300 earlier), so it does
    # not get all its four turns before "a" has another.
    later = [turns.start(f"b{i}", "b", 100) for i in range(4)] + [turns.start("a4", "a", 100)]
    await settle()
    for _ in range(6):
        await turns.finish(turns.order[-1])
    await asyncio.gather(*first, *later)
    assert turns.order == ["a0", "a1", "a2", "a3", "b0", "b1", "a4", "b2", "b3"]


async def test_the_cost_decoding_at_once_stays_within_the_bound() -> None:
    turns = Recorder(FairQueue(slots=4, max_cost=1000))
    tasks = [turns.start("large0", "a", 700), turns.start("large1", "a", 700)]
    await settle()
    tasks.append(turns.start("small", "b", 200))
    await settle()
    # The second large upload would pass the bound; the small one fits beside the first.
    assert turns.order == ["large0", "small"]
    await turns.finish("large0")
    assert turns.order == ["large0", "small", "large1"]
    await turns.finish("small")
    await turns.finish("large1")
    await asyncio.gather(*tasks)


async def test_an_upload_over_the_bound_runs_alone_and_is_not_starved() -> None:
    turns = Recorder(FairQueue(slots=4, max_cost=1000))
    tasks = [turns.start("small0", "a", 100), turns.start("huge", "b", 5000)]
    await settle()
    tasks.append(turns.start("small1", "a", 100))
    await settle()
    assert turns.order == ["small0"]  # "huge" waits for the pool to empty; "small1" behind it
    await turns.finish("small0")
    assert turns.order == ["small0", "huge"]
    await turns.finish("huge")
    await turns.finish("small1")
    await asyncio.gather(*tasks)
    assert turns.order == ["small0", "huge", "small1"]


async def test_a_cancelled_waiter_leaves_its_place_and_a_cancelled_turn_frees_its_worker() -> None:
    queue = FairQueue(slots=1, max_cost=10**12)
    turns = Recorder(queue)
    holder = turns.start("holder", "a", 10)
    waiter = turns.start("waiter", "b", 10)
    behind = turns.start("behind", "c", 10)
    await settle()
    waiter.cancel()
    holder.cancel()
    await settle()
    assert turns.order == ["holder", "behind"]
    await turns.finish("behind")
    await asyncio.gather(holder, waiter, behind, return_exceptions=True)
    async with asyncio.timeout(1):
        async with queue.turn("d", 10):
            pass  # the worker and its cost are free again


def test_an_account_in_debt_is_refused_with_the_time_to_repay_it() -> None:
    now = [1000.0]
    allowance = CpuAllowance(per_minute=6.0, clock=lambda: now[0])  # 0.1 s a second
    allowance.check("a")
    allowance.charge("a", 8.0)  # a minute's 6 s, and 2 s of debt
    with pytest.raises(ApiError) as caught:
        allowance.check("a")
    assert caught.value.code == "decode_budget_exceeded"
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "20"}
    allowance.check("b")  # other accounts are untouched
    now[0] += 19.0
    with pytest.raises(ApiError):
        allowance.check("a")
    now[0] += 1.5
    allowance.check("a")
    now[0] += 3600
    allowance.charge("a", 5.9)  # the allowance refills to a minute's worth, never more
    allowance.check("a")
    allowance.charge("a", 0.2)
    with pytest.raises(ApiError):
        allowance.check("a")
