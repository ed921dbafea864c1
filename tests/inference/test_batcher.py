"""MicroBatcher with a real numpy predict function: grouping, limits, overload, errors, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from dupify.errors import ApiError
from dupify.inference.batcher import MicroBatcher
from support.waiting import wait_until

Array = npt.NDArray[Any]


class Model:
    """A stand-in model: real numpy maths, records each batch, can be held or made to fail."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()  # set when predict starts
        self.release = threading.Event()  # predict blocks until set
        self.release.set()

    def predict(self, batch: Array) -> Mapping[str, Array]:
        self.batch_sizes.append(len(batch))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if not self.release.wait(timeout=10):
            raise TimeoutError("test never released predict")
        if (batch < 0).any():
            raise ValueError("negative input")
        return {"double": batch * 2.0, "total": batch.sum(axis=1)}

    def hold(self) -> None:
        self.entered.clear()
        self.release.clear()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 5), "predict was never called"


def item(value: float) -> Array:
    return np.full(3, value, dtype=np.float32)


@pytest.fixture
def model() -> Model:
    return Model()


async def make(model: Model, **overrides: Any) -> MicroBatcher:
    options: dict[str, Any] = {
        "max_batch": 8,
        "max_wait_ms": 20.0,
        "queue_size": 64,
        "retry_after_s": 7,
        "name": "test",
    }
    options.update(overrides)
    batcher = MicroBatcher(model.predict, **options)
    await batcher.start()
    return batcher


@pytest.fixture
async def batcher(model: Model) -> AsyncIterator[MicroBatcher]:
    batcher = await make(model)
    yield batcher
    model.release.set()
    await batcher.stop()


async def test_concurrent_submits_are_grouped_and_rows_routed(
    batcher: MicroBatcher, model: Model
) -> None:
    results = await asyncio.gather(*(batcher.submit(item(i)) for i in range(8)))
    assert model.batch_sizes == [8]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows["double"], item(2 * i))
        assert rows["total"] == pytest.approx(3 * i)
    stats = batcher.stats()
    assert (stats.batches, stats.items, stats.last_batch_size) == (1, 8, 8)
    assert stats.batch_sizes == {8: 1} and stats.mean_batch_size == 8.0


async def test_predict_runs_off_the_event_loop_thread(batcher: MicroBatcher, model: Model) -> None:
    await batcher.submit(item(1))
    assert model.threads and threading.current_thread().name not in model.threads
    assert all(name.startswith("infer-test") for name in model.threads)


async def test_max_batch_is_respected(model: Model) -> None:
    batcher = await make(model, max_batch=4)
    try:
        results = await asyncio.gather(*(batcher.submit(item(i)) for i in range(10)))
    finally:
        await batcher.stop()
    assert model.batch_sizes == [4, 4, 2]
    assert [float(rows["total"]) for rows in results] == [3.0 * i for i in range(10)]


async def test_a_full_batch_does_not_wait(model: Model) -> None:
    batcher = await make(model, max_batch=4, max_wait_ms=10_000)
    try:
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(item(i)) for i in range(4)))
        assert time.monotonic() - started < 2.0
    finally:
        await batcher.stop()
    assert model.batch_sizes == [4]


async def test_a_lone_item_waits_at_most_max_wait(model: Model) -> None:
    batcher = await make(model, max_wait_ms=100)
    try:
        started = time.monotonic()
        await batcher.submit(item(1))
        elapsed = time.monotonic() - started
    finally:
        await batcher.stop()
    assert 0.09 <= elapsed < 1.0
    assert model.batch_sizes == [1]


async def test_late_arrivals_within_max_wait_join_the_batch(model: Model) -> None:
    batcher = await make(model, max_wait_ms=300)
    try:
        first = asyncio.create_task(batcher.submit(item(1)))
        await asyncio.sleep(0.03)
        second = asyncio.create_task(batcher.submit(item(2)))
        await asyncio.gather(first, second)
    finally:
        await batcher.stop()
    assert model.batch_sizes == [2]


async def test_zero_wait_runs_what_is_there(model: Model) -> None:
    batcher = await make(model, max_wait_ms=0)
    try:
        await batcher.submit(item(1))
        await asyncio.gather(*(batcher.submit(item(i)) for i in range(3)))
    finally:
        await batcher.stop()
    assert model.batch_sizes == [1, 3]


async def test_full_queue_is_overloaded_with_retry_after(model: Model) -> None:
    batcher = await make(model, max_batch=1, queue_size=3)
    try:
        model.hold()
        running = asyncio.create_task(batcher.submit(item(0)))
        await model.wait_entered()  # item 0 is inside predict, out of the queue
        queued = [asyncio.create_task(batcher.submit(item(i))) for i in (1, 2, 3)]
        await wait_until(lambda: batcher.queue_depth == 3)

        with pytest.raises(ApiError) as caught:
            await batcher.submit(item(4))
        assert caught.value.code == "overloaded" and caught.value.status == 503
        assert caught.value.headers == {"Retry-After": "7"}
        with pytest.raises(ApiError, match="queue is full"):
            await batcher.submit_many([item(5)])  # all-or-none: nothing of it is queued
        assert batcher.stats().rejected == 2

        model.release.set()
        results = await asyncio.gather(running, *queued)
        assert [float(rows["total"]) for rows in results] == [0.0, 3.0, 6.0, 9.0]
    finally:
        model.release.set()
        await batcher.stop()
    assert model.batch_sizes == [1, 1, 1, 1]


async def test_a_request_larger_than_free_space_is_refused_whole(model: Model) -> None:
    batcher = await make(model, max_batch=1, queue_size=3)
    try:
        model.hold()
        running = asyncio.create_task(batcher.submit(item(0)))
        await model.wait_entered()
        queued = asyncio.create_task(batcher.submit(item(1)))
        await wait_until(lambda: batcher.queue_depth == 1)
        with pytest.raises(ApiError, match="queue is full"):
            await batcher.submit_many([item(i) for i in range(3)])
        assert batcher.queue_depth == 1
        model.release.set()
        await asyncio.gather(running, queued)
    finally:
        model.release.set()
        await batcher.stop()


async def test_predict_error_reaches_every_caller_and_batching_goes_on(
    batcher: MicroBatcher, model: Model
) -> None:
    outcomes = await asyncio.gather(
        batcher.submit(item(1)),
        batcher.submit(item(-1)),  # poisons the whole batch
        batcher.submit(item(2)),
        return_exceptions=True,
    )
    assert model.batch_sizes == [3]
    assert all(isinstance(outcome, ValueError) for outcome in outcomes), outcomes
    assert batcher.stats().failed_batches == 1

    rows = await batcher.submit(item(5))
    assert float(rows["total"]) == 15.0
    assert batcher.running


async def test_a_cancelled_caller_does_not_break_the_batch(
    batcher: MicroBatcher, model: Model
) -> None:
    model.hold()
    running = asyncio.create_task(batcher.submit(item(0)))
    await model.wait_entered()
    gone = asyncio.create_task(batcher.submit(item(1)))
    stays = asyncio.create_task(batcher.submit(item(2)))
    await wait_until(lambda: batcher.queue_depth == 2)
    gone.cancel()  # the client went away while its item waited
    model.release.set()

    assert float((await stays)["total"]) == 6.0
    assert float((await running)["total"]) == 0.0
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert model.batch_sizes == [1, 1]  # the cancelled item was skipped, not computed
    assert batcher.stats().cancelled == 1


async def test_a_caller_cancelled_mid_batch_leaves_the_others_intact(
    batcher: MicroBatcher, model: Model
) -> None:
    model.hold()
    gone = asyncio.create_task(batcher.submit(item(1)))
    stays = asyncio.create_task(batcher.submit(item(2)))
    await model.wait_entered()  # both are inside one running batch
    gone.cancel()
    model.release.set()
    assert float((await stays)["total"]) == 6.0
    assert gone.cancelled()
    assert model.batch_sizes == [2]
    assert (await batcher.submit(item(3)))["total"] == pytest.approx(9.0)


async def test_stop_drains_every_accepted_item(model: Model) -> None:
    batcher = await make(model, max_batch=2)
    model.hold()
    tasks = [asyncio.create_task(batcher.submit(item(i))) for i in range(5)]
    await model.wait_entered()
    stopping = asyncio.create_task(batcher.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()  # still waiting for the batches in hand

    with pytest.raises(ApiError) as caught:
        await batcher.submit(item(9))  # no new work once stopping
    assert caught.value.code == "not_ready"

    model.release.set()
    results = await asyncio.gather(*tasks)
    await stopping
    assert [float(rows["total"]) for rows in results] == [3.0 * i for i in range(5)]
    assert sum(model.batch_sizes) == 5 and max(model.batch_sizes) <= 2
    assert not batcher.running


async def test_wrong_item_shape_fails_only_that_request(model: Model) -> None:
    batcher = await make(model, item_shape=(3,))
    try:
        with pytest.raises(ValueError, match="shape"):
            await batcher.submit(np.zeros(4, np.float32))
        assert float((await batcher.submit(item(1)))["total"]) == 3.0
    finally:
        await batcher.stop()


async def test_a_model_returning_the_wrong_row_count_fails_loudly(model: Model) -> None:
    def short(batch: Array) -> Mapping[str, Array]:
        return {"double": batch[:1] * 2}

    batcher = MicroBatcher(
        short, max_batch=4, max_wait_ms=5, queue_size=8, retry_after_s=1, name="short"
    )
    await batcher.start()
    try:
        outcomes = await asyncio.gather(
            batcher.submit(item(1)), batcher.submit(item(2)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert "returned 1 rows" in str(outcomes[0])


async def test_submit_before_start_is_not_ready(model: Model) -> None:
    batcher = MicroBatcher(
        model.predict, max_batch=4, max_wait_ms=5, queue_size=8, retry_after_s=2, name="cold"
    )
    with pytest.raises(ApiError) as caught:
        await batcher.submit(item(1))
    assert caught.value.code == "not_ready" and caught.value.headers == {"Retry-After": "2"}
