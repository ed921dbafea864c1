"""Asyncio micro-batcher: groups concurrent requests' tensors into one model call off the loop."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from dupify.errors import ApiError

ItemT = TypeVar("ItemT")

log = logging.getLogger("dupify.inference.batcher")

Array = npt.NDArray[Any]
Rows = dict[str, Array]
PredictFn = Callable[[Array], Mapping[str, Array]]
# Items -> the batch `predict` takes: a stack of tensors, or a model's `preprocess_batch`.
AssembleFn = Callable[[Sequence[Array]], Array]


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of one batcher's counters, for /metrics and benchmarks."""

    name: str
    batches: int
    items: int  # images run through `predict` (one per item, failed batches included)
    failed_batches: int
    rejected: int
    cancelled: int
    queue_depth: int
    last_batch_size: int
    busy_seconds: float  # summed over runners: up to `concurrency` x wall time
    batch_sizes: dict[int, int] = field(default_factory=dict)  # size -> batches of that size

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Job:
    item: Array
    future: asyncio.Future[Rows]
    enqueued_at: float


async def gather_batch(
    take: Callable[[], ItemT | None],
    wakeup: asyncio.Event,
    closing: Callable[[], bool],
    max_batch: int | Callable[[], int],
    deadline_of: Callable[[ItemT], float],
) -> list[ItemT] | None:
    """Wait for a first item, then for more until `deadline_of(first)` (monotonic seconds) or
    until the batch is full: how a micro-batch forms, here and in the remote backend's lanes.

    `take` pops the oldest item still wanted (or None), `wakeup` is set whenever one is added,
    `closing` says the owner is stopping. `max_batch` may be a function, asked once the first
    item is taken (what then waits decides the size). None once stopping with nothing left.
    """
    first = take()
    while first is None:
        if closing():
            return None
        wakeup.clear()
        await wakeup.wait()
        first = take()
    batch = [first]
    deadline = deadline_of(first)
    limit = max_batch() if callable(max_batch) else max_batch
    while len(batch) < limit:
        item = take()
        if item is not None:
            batch.append(item)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0 or closing():
            break
        wakeup.clear()
        try:
            async with asyncio.timeout(remaining):
                await wakeup.wait()
        except TimeoutError:
            break
    return batch


class MicroBatcher:
    """Collects items from concurrent callers into batches of up to `max_batch` for `predict`.

    The collector waits for a free runner, takes the oldest waiting item, then waits until that item
    has waited `max_wait_ms` (or the batch is full) for company, and hands the batch to a
    runner: `assemble` (by default a stack of the items) and `predict` in the batcher's own
    executor of `concurrency` threads, so up to `concurrency` batches run at once and the event
    loop is never blocked. While every runner is busy, new items queue up and form the next
    batch, so under load batches fill without waiting. On a CPU, several single-threaded runners
    beat one batch spread over every core (`dupify.inference.session.SessionPolicy.batches` says
    why). The queue of waiting items is bounded; a full queue answers `overloaded` (503 +
    Retry-After) immediately instead of growing latency.
    """

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        retry_after_s: int,
        name: str,
        item_shape: tuple[int, ...] | None = None,
        concurrency: int = 1,
        assemble: AssembleFn = np.stack,
    ) -> None:
        if min(max_batch, queue_size, retry_after_s, concurrency) < 1 or max_wait_ms < 0:
            raise ValueError(
                "need max_batch >= 1, queue_size >= 1, max_wait_ms >= 0, retry_after_s >= 1, "
                "concurrency >= 1"
            )
        self.concurrency = concurrency
        self._predict = predict
        self._assemble = assemble
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self.name = name
        # Checked at submit so one malformed item fails its own request, not a stacked batch.
        self.item_shape = item_shape
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._batches = 0
        self._items = 0
        self._failed = 0
        self._rejected = 0
        self._cancelled = 0
        self._last_size = 0
        self._busy = 0.0
        self._sizes: collections.Counter[int] = collections.Counter()

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._closing

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._collector is not None:
            return
        self._closing = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"infer-{self.name}"
        )
        self._collector = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new items, finish every item already accepted, then release the thread."""
        if self._collector is None:
            return
        self._closing = True
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            await self._collector
        finally:
            self._collector = None
            # The collector normally leaves nothing behind; if it was torn down (e.g. loop
            # cancellation), do not leave callers waiting forever.
            self._fail(list(self._pending), RuntimeError(f"batcher {self.name} stopped"))
            self._pending.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    async def submit(self, item: Array) -> Rows:
        """Queue one item (a tensor, or what `assemble` takes); returns that item's row of
        every `predict` output."""
        (rows,) = await self.submit_many([item])
        return rows

    async def submit_many(self, items: Sequence[Array]) -> list[Rows]:
        """Queue several items of one request, all or none, and return their rows in order.

        All-or-none admission keeps a request from being half computed and then refused.
        """
        for item in items:
            self._check_item(item)
        self._admit(len(items))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[Rows]] = []
        for item in items:
            future: asyncio.Future[Rows] = loop.create_future()
            self._pending.append(_Job(item, future, now))
            futures.append(future)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            # Caller gone or a sibling failed: cancel our queued items so the collector skips
            # them; items already inside a running batch just have their rows dropped.
            for future in futures:
                future.cancel()
            raise

    def stats(self) -> BatcherStats:
        return BatcherStats(
            name=self.name,
            batches=self._batches,
            items=self._items,
            failed_batches=self._failed,
            rejected=self._rejected,
            cancelled=self._cancelled,
            queue_depth=len(self._pending),
            last_batch_size=self._last_size,
            busy_seconds=self._busy,
            batch_sizes=dict(sorted(self._sizes.items())),
        )

    def _admit(self, count: int) -> None:
        if self._collector is None or self._closing:
            raise ApiError(
                "not_ready",
                f"Model {self.name} is not accepting work (starting or shutting down).",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if count > self.queue_size:
            raise ValueError(f"{count} items can never fit a queue of {self.queue_size}")
        if len(self._pending) + count > self.queue_size:
            self._rejected += 1
            raise ApiError(
                "overloaded",
                f"The {self.name} inference queue is full; retry after {self.retry_after_s} s.",
                headers={"Retry-After": str(self.retry_after_s)},
            )

    def _check_item(self, item: Array) -> None:
        if not isinstance(item, np.ndarray):
            raise TypeError(f"expected a numpy array, got {type(item).__name__}")
        if self.item_shape is not None and item.shape != self.item_shape:
            raise ValueError(f"expected an item of shape {self.item_shape}, got {item.shape}")

    async def _collect(self) -> None:
        """The one collector task: wait for a free runner, batch, run; until stopped and
        drained (every batch handed to a runner finished)."""
        runners = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                # A runner first, then the batch: items that arrive while every runner is busy
                # join the next batch instead of waiting in a batch of their own.
                await runners.acquire()
                batch = await self._next_batch()
                if batch is None:
                    return
                task = asyncio.create_task(self._run(batch), name=f"batch-{self.name}")
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: runners.release())
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _run(self, batch: list[_Job]) -> None:
        """One batch in a runner thread; its callers get their rows or its error."""
        assert self._executor is not None
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:
            self._failed += 1
            log.warning("batcher %s: batch of %d failed: %r", self.name, len(batch), exc)
            self._fail(batch, exc)
            return
        except BaseException:
            # The collector itself is being torn down: its callers must not hang.
            self._fail(batch, RuntimeError(f"batcher {self.name} stopped"))
            raise
        finally:
            self._busy += time.perf_counter() - started
            self._batches += 1
            self._items += len(batch)
            self._last_size = len(batch)
            self._sizes[len(batch)] += 1
        for job, row in zip(batch, rows, strict=True):
            if not job.future.done():  # cancelled callers simply get nothing
                job.future.set_result(row)

    @staticmethod
    def _fail(batch: list[_Job], exc: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(exc)

    def _take_live(self) -> _Job | None:
        """Pop the oldest waiting job whose caller is still there."""
        while self._pending:
            job = self._pending.popleft()
            if not job.future.cancelled():
                return job
            self._cancelled += 1
        return None

    async def _next_batch(self) -> list[_Job] | None:
        """The next batch to run, or None once stopping with nothing left to do."""
        assert self._wakeup is not None
        # The deadline counts from when the first item arrived, so time spent queued behind
        # running batches is part of its wait budget rather than added on top of it.
        return await gather_batch(
            self._take_live,
            self._wakeup,
            lambda: self._closing,
            self._share,
            lambda first: first.enqueued_at + self.max_wait_s,
        )

    def _share(self) -> int:
        """How many items this batch takes, asked once its first is taken: its runner's share
        of what waits, at most `max_batch`. With several runners, a batch never takes what
        another runner could start on as soon as it is free: a runner alone runs a small batch
        as fast per image as a large one, so an even spread shortens every batch, and so the
        wait of the items behind it; and one request of 16 images alone runs on every core
        rather than as one batch on one."""
        if self.concurrency == 1:
            return self.max_batch
        waiting = len(self._pending) + 1  # the first item, already taken
        return max(1, min(self.max_batch, -(-waiting // self.concurrency)))

    def _run_batch(self, batch: list[_Job]) -> list[Rows]:
        """In the executor thread: assembling and splitting copy megabytes, so not on the loop."""
        outputs = self._predict(self._assemble([job.item for job in batch]))
        for key, value in outputs.items():
            if len(value) != len(batch):
                raise RuntimeError(
                    f"model {self.name} returned {len(value)} rows of {key!r} for "
                    f"{len(batch)} inputs"
                )
        # Copies, so that a kept row does not pin the whole batch's output array in memory.
        return [{key: value[i].copy() for key, value in outputs.items()} for i in range(len(batch))]
