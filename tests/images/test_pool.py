"""The decoder's worker pool on its own: what crosses the pipes arrives whole and in the right
types (large frames too), a worker's error comes back as itself, a worker abandoned mid-task is
replaced, Ctrl-C does not stop a worker, and the pool serves whichever event loop awaits it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from dupify.images.pool import WorkerDied, WorkerPool

BUDGET_S = 30.0


def ready() -> None:
    """The workers' initializer in these tests."""


def describe(upload: bytes, small: bytes) -> tuple[str, int, str, str]:
    """Runs in a worker: what it was given, as it sees it."""
    return type(upload).__name__, len(upload), hashlib.sha256(upload).hexdigest(), small.decode()


def pixels(side: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def made_here(side: int, seed: int) -> dict[str, object]:
    """Runs in a worker: pixels made there, as a decode makes them."""
    return {"pixels": pixels(side, seed), "note": "x"}


def fail(message: str) -> None:
    raise ValueError(message)


def unpicklable() -> object:
    return lambda: None


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(2, ready)
    workers.warm_up(60)
    yield workers
    workers.close()


@pytest.mark.parametrize("size", [5_000, 3 * 1024 * 1024], ids=["small", "over-the-pipe"])
async def test_an_upload_arrives_as_the_same_bytes(pool: WorkerPool, size: int) -> None:
    upload = os.urandom(size)
    kind, length, digest, small = await pool.run(describe, upload, b"tag", budget_s=BUDGET_S)
    assert (kind, length, digest, small) == (
        "bytes",
        size,
        hashlib.sha256(upload).hexdigest(),
        "tag",
    )


@pytest.mark.parametrize("side", [256, 1200], ids=["working-side", "over-the-pipe"])
async def test_pixels_come_back_equal_and_writable(pool: WorkerPool, side: int) -> None:
    back = await pool.run(made_here, side, side, budget_s=BUDGET_S)
    assert back["note"] == "x"
    np.testing.assert_array_equal(back["pixels"], pixels(side, seed=side))
    assert back["pixels"].flags.c_contiguous and back["pixels"].flags.writeable


async def test_a_workers_error_is_raised_here_and_the_worker_kept(pool: WorkerPool) -> None:
    before = sorted(pool.pids)
    with pytest.raises(ValueError, match="bad upload"):
        await pool.run(fail, "bad upload", budget_s=BUDGET_S)
    with pytest.raises(RuntimeError, match="unpicklable"):
        await pool.run(unpicklable, budget_s=BUDGET_S)
    assert sorted(pool.pids) == before


async def test_a_task_past_its_budget_or_abandoned_costs_its_worker(pool: WorkerPool) -> None:
    with pytest.raises(TimeoutError):
        await pool.run(pid_after, 5.0, budget_s=0.2)
    task = asyncio.create_task(pool.run(pid_after, 5.0, budget_s=BUDGET_S))
    await asyncio.sleep(0.3)
    busy = set(pool.pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(pool.pids) != busy  # the abandoned worker was replaced
    assert await asyncio.gather(*(pool.run(os.getpid, budget_s=BUDGET_S) for _ in range(2)))


async def test_ctrl_c_does_not_stop_a_busy_worker(pool: WorkerPool) -> None:
    task = asyncio.create_task(pool.run(pid_after, 0.5, budget_s=BUDGET_S))
    await asyncio.sleep(0.2)
    for pid in pool.pids:
        os.kill(pid, signal.SIGINT)
    assert await task in pool.pids


async def test_a_killed_worker_is_reported_with_its_exit_code(pool: WorkerPool) -> None:
    task = asyncio.create_task(pool.run(pid_after, 5.0, budget_s=BUDGET_S))
    await asyncio.sleep(0.3)
    old = set(pool.pids)
    for pid in old:
        os.kill(pid, signal.SIGTERM)  # the idle one is replaced when next handed a task
    with pytest.raises(WorkerDied) as died:
        await task
    assert died.value.exit_code == -signal.SIGTERM
    pids = await asyncio.gather(*(pool.run(pid_after, 0.2, budget_s=BUDGET_S) for _ in range(2)))
    assert not old & set(pids)


def test_the_pool_serves_whichever_loop_awaits_it() -> None:
    workers = WorkerPool(1, ready)
    try:
        first = asyncio.run(workers.run(os.getpid, budget_s=BUDGET_S))
        second = asyncio.run(workers.run(os.getpid, budget_s=BUDGET_S))
        assert first == second  # one worker, kept between two loops
        [process] = workers.pids
    finally:
        workers.close()
    with pytest.raises(ProcessLookupError):
        os.kill(process, 0)  # closed: killed and reaped
    with pytest.raises(RuntimeError):
        asyncio.run(workers.run(os.getpid, budget_s=BUDGET_S))


async def test_closing_with_a_task_in_flight_ends_the_task() -> None:
    """The pool closed under a running task (a server stopping): the task ends, never hangs."""
    workers = WorkerPool(1, ready)
    workers.warm_up(60)
    task = asyncio.create_task(workers.run(pid_after, 5.0, budget_s=BUDGET_S))
    await asyncio.sleep(0.3)
    [process] = workers.pids
    workers.close()
    with pytest.raises(WorkerDied):
        async with asyncio.timeout(5):
            await task
    with pytest.raises(ProcessLookupError):
        os.kill(process, 0)
