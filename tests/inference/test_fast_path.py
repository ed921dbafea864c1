"""Issue 16's fast path changed no answer: each bundled model run the CPU default way (one
single-threaded batch per core, several batches at once, micro-batched across callers, each
batch preprocessed in its runner) gives the vectors of the slow path (one image at a time,
preprocessed on its own, on one session spread over every core) to 1e-5;
and the batcher really runs `concurrency` batches at once, and never more."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import pytest

from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.backend import LocalBackend
from dupify.inference.batcher import Array, MicroBatcher
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from support.samples import PHOTO_NAMES, sample_photo

MODELS = ("dupify-visual-1", "dupify-semantic-1")


@pytest.mark.parametrize("model_id", MODELS)
async def test_the_fast_path_gives_the_slow_paths_vectors(model_id: str) -> None:
    fast_settings = InferenceSettings(concurrent_batches=2, max_batch=4, max_wait_ms=1.0)
    assert SessionPolicy.from_settings(fast_settings).threads == 1  # on this 2-core machine
    slow = ModelRegistry(
        InferenceSettings(concurrent_batches=1, intra_op_threads=2), only=[model_id]
    ).get(model_id)
    fast_registry = ModelRegistry(fast_settings, only=[model_id])
    backend = LocalBackend(fast_registry, fast_settings)
    assert backend.inputs == "pixels"  # each runner preprocesses its batch
    photos = [sample_photo(name) for name in PHOTO_NAMES[:10]]
    await backend.start()
    try:
        # Ten callers at once: several batches of up to 4, two running at a time.
        outcomes = await asyncio.gather(*(backend.infer(model_id, [p]) for p in photos))
    finally:
        await backend.stop()
    assert max(backend.stats()[model_id].batch_sizes) > 1  # batched across callers
    for photo, [row] in zip(photos, outcomes, strict=True):
        assert not isinstance(row, ApiError)
        alone = slow.predict(slow.preprocess(photo)[np.newaxis])
        for name, value in row.items():
            np.testing.assert_allclose(value, np.asarray(alone[name])[0], atol=1e-5)


class TwoAtOnce:
    """A `predict` that records how many calls overlap; each call waits (bounded) until two
    have been seen at once, so with room for two they are seen together."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.together = threading.Event()

    def __call__(self, batch: Array) -> Mapping[str, Array]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            if self.running >= 2:
                self.together.set()
        try:
            # Bounded: with room for one batch only, no partner comes; go on alone.
            self.together.wait(timeout=0.15)
            return {"embedding": batch.reshape(len(batch), -1)}
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_batcher_runs_up_to_concurrency_batches_at_once(concurrency: int) -> None:
    predict = TwoAtOnce()
    batcher = MicroBatcher(
        predict,
        max_batch=1,
        max_wait_ms=0,
        queue_size=16,
        retry_after_s=1,
        name="test",
        concurrency=concurrency,
    )
    await batcher.start()
    try:
        items = [np.full((2,), index, dtype=np.float32) for index in range(4)]
        rows = await asyncio.gather(*(batcher.submit(item) for item in items))
    finally:
        await batcher.stop()
    for item, row in zip(items, rows, strict=True):  # each caller its own row, in order
        np.testing.assert_array_equal(row["embedding"], item)
    assert predict.most == concurrency
    assert batcher.stats().batches == 4


async def test_one_large_request_alone_is_spread_over_the_runners() -> None:
    def predict(batch: Array) -> Mapping[str, Array]:
        return {"embedding": batch}

    batcher = MicroBatcher(
        predict,
        max_batch=16,
        max_wait_ms=0,
        queue_size=64,
        retry_after_s=1,
        name="test",
        concurrency=2,
    )
    await batcher.start()
    try:
        items = [np.full((1,), index, dtype=np.float32) for index in range(16)]
        rows = await batcher.submit_many(items)
    finally:
        await batcher.stop()
    assert [float(row["embedding"][0]) for row in rows] == list(range(16))
    sizes = batcher.stats().batch_sizes
    # Never more than a runner's share of what waits: the first batch half, the rest after it
    # split between the two runners, so both work until the end.
    assert max(sizes) == 8 and sum(size * n for size, n in sizes.items()) == 16
