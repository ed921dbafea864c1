"""`RemoteBackend`: the core stage on GPU workers behind a RunPod Serverless endpoint (or
`dupify worker serve`), batched across concurrent requests, bounded in time, with a circuit
breaker and an optional in-process fallback."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from dupify.config import InferenceSettings, RunpodSettings
from dupify.errors import ApiError
from dupify.inference.backend import InputKind, LocalBackend, ModelInput
from dupify.inference.batcher import Array, BatcherStats, Rows, gather_batch
from dupify.inference.breaker import CircuitBreaker
from dupify.inference.endpoint import Endpoint, JobFailed
from dupify.inference.models.base import text_tower_id
from dupify.inference.registry import ModelRegistry
from dupify.inference.wire import WireError, decode_outputs, encode_job

log = logging.getLogger("dupify.inference.remote")
PAYLOAD_OVERHEAD = 512  # the JSON around a job's data, generously


def unavailable(message: str, retry_after_s: int) -> ApiError:
    return ApiError(
        "inference_unavailable", message, headers={"Retry-After": str(max(1, retry_after_s))}
    )


def check_transport(settings: RunpodSettings) -> None:
    """Image tensors leave this process only over TLS, or to this machine (PRIVACY row 11):
    plain http to another host needs DUPIFY_RUNPOD__ALLOW_HTTP (a private network)."""
    url = httpx.URL(settings.endpoint_url or "")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"DUPIFY_RUNPOD__ENDPOINT_URL must be an http(s) URL, got {url!s:.100}")
    loopback = url.host in ("localhost", "::1") or url.host.startswith("127.")
    if url.scheme == "http" and not loopback and not settings.allow_http:
        raise ValueError(
            "DUPIFY_RUNPOD__ENDPOINT_URL is plain http to another machine: images would cross "
            "the network unencrypted. Use https, or set DUPIFY_RUNPOD__ALLOW_HTTP=true for a "
            "private network you trust"
        )


def plan_jobs(
    model_id: str, tensors: Sequence[Array], max_payload: int
) -> list[tuple[int, int, dict[str, object]]]:
    """The jobs (start, stop, input) that carry `tensors`, each under `max_payload` bytes:
    one job if it fits, else halves, recursively. Runs in a thread (encoding copies MBs)."""
    payload = encode_job(model_id, tensors)
    size = len(str(payload["data"])) + PAYLOAD_OVERHEAD
    if size <= max_payload:
        return [(0, len(tensors), payload)]
    if len(tensors) == 1:
        raise ValueError(f"one {model_id} tensor is {size} bytes encoded, over {max_payload}")
    half = len(tensors) // 2
    first = plan_jobs(model_id, tensors[:half], max_payload)
    second = plan_jobs(model_id, tensors[half:], max_payload)
    return first + [(start + half, stop + half, job) for start, stop, job in second]


@dataclass(eq=False)
class _Item:
    tensor: Array
    future: asyncio.Future[Rows]
    deadline: float  # loop time


class _Lane:
    """One model's queue: items from concurrent calls wait up to `max_wait_ms` for company,
    then leave as one job of up to `max_batch`, at most `max_jobs_in_flight` jobs at a time."""

    def __init__(
        self,
        model_id: str,
        endpoint: Endpoint,
        breaker: CircuitBreaker,
        settings: RunpodSettings,
        queue_size: int,
    ) -> None:
        self.model_id = model_id
        self._endpoint = endpoint
        self._breaker = breaker
        self._settings = settings
        self._queue_size = queue_size
        self._pending: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_jobs_in_flight)
        self._jobs: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._closing = False
        self.counts: collections.Counter[str] = collections.Counter()
        self.sizes: collections.Counter[int] = collections.Counter()
        self.busy = 0.0
        self.last_size = 0

    def start(self) -> None:
        self._closing = False
        self._collector = asyncio.create_task(self._collect(), name=f"remote-{self.model_id}")

    async def stop(self) -> None:
        """Send what is queued, then wait for every job (each ends by its deadline)."""
        self._closing = True
        self._wakeup.set()
        if self._collector is not None:
            await self._collector
            self._collector = None
        if self._jobs:
            await asyncio.wait(set(self._jobs))

    async def submit(self, tensors: Sequence[Array]) -> list[Rows]:
        settings = self._settings
        if self._collector is None or self._closing:
            raise ApiError(
                "not_ready",
                "The inference backend is not accepting work (starting or shutting down).",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        if len(self._pending) + len(tensors) > self._queue_size:
            self.counts["rejected"] += 1
            raise ApiError(
                "overloaded",
                f"The {self.model_id} inference queue is full; retry after "
                f"{settings.retry_after_s} s.",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout_s
        futures = [loop.create_future() for _ in tensors]
        self._pending.extend(_Item(t, f, deadline) for t, f in zip(tensors, futures, strict=True))
        self._wakeup.set()
        try:
            async with asyncio.timeout_at(deadline):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise unavailable(
                f"The inference workers did not answer within {settings.timeout_s:g} s.",
                settings.retry_after_s,
            ) from None
        finally:
            for future in futures:  # caller gone or answered: queued items are skipped
                future.cancel()

    async def _collect(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            await self._slots.acquire()
            task = asyncio.create_task(self._send(batch))
            self._jobs.add(task)
            task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._slots.release()

    def _take_live(self) -> _Item | None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                return item
            self.counts["cancelled"] += 1
        return None

    async def _next_batch(self) -> list[_Item] | None:
        return await gather_batch(
            self._take_live,
            self._wakeup,
            lambda: self._closing,
            self._settings.max_batch,
            lambda first: time.monotonic() + self._settings.max_wait_ms / 1000,
        )

    async def _send(self, batch: list[_Item]) -> None:
        """Encode (in a thread), split under the payload cap, and run the jobs concurrently."""
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        try:
            jobs = await asyncio.to_thread(
                plan_jobs,
                self.model_id,
                [item.tensor for item in live],
                self._settings.max_payload_bytes,
            )
        except ValueError as exc:
            log.error("remote %s: cannot send: %s", self.model_id, exc)
            self._fail(live, "The inference workers cannot take this model's input.")
            return
        await asyncio.gather(*(self._run_job(live[start:stop], job) for start, stop, job in jobs))

    async def _run_job(self, items: list[_Item], job: dict[str, object]) -> None:
        started = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deadline = min(item.deadline for item in items)
        runner = asyncio.create_task(self._endpoint.run(job, deadline))

        def abandon_when_nobody_waits(_: object) -> None:
            # Every caller of this job has gone (or timed out): cancel it, at RunPod too.
            if all(item.future.done() for item in items) and not runner.done():
                runner.cancel()

        for item in items:
            item.future.add_done_callback(abandon_when_nobody_waits)
        try:
            output = await runner
            rows = await asyncio.to_thread(decode_outputs, output, self.model_id, len(items))
        except asyncio.CancelledError:
            if task.cancelling():
                raise
            # Our runner was cancelled because nobody waits any more: nothing to answer. If
            # they left because the deadline passed, the endpoint lost a whole deadline.
            if loop.time() >= deadline:
                self._breaker.failure(trip=True)
                self.counts["failed"] += 1
                log.warning("remote %s: job of %d timed out", self.model_id, len(items))
            else:
                self.counts["abandoned"] += 1
            return
        except (JobFailed, WireError) as exc:
            timed_out = isinstance(exc, JobFailed) and exc.timed_out
            self._breaker.failure(trip=timed_out)
            self.counts["failed"] += 1
            log.warning("remote %s: job of %d failed: %s", self.model_id, len(items), exc)
            self._fail(items, "The inference workers failed; retry later.")
            return
        finally:
            self.counts["jobs"] += 1
            self.counts["items"] += len(items)
            self.sizes[len(items)] += 1
            self.last_size = len(items)
            self.busy += time.perf_counter() - started
        self._breaker.success()
        for item, row in zip(items, rows, strict=True):
            if not item.future.done():
                item.future.set_result(row)

    def _fail(self, items: Sequence[_Item], message: str) -> None:
        error = unavailable(message, self._settings.retry_after_s)
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def stats(self) -> BatcherStats:
        return BatcherStats(
            name=self.model_id,
            batches=self.counts["jobs"],
            items=self.counts["items"],
            failed_batches=self.counts["failed"],
            rejected=self.counts["rejected"],
            cancelled=self.counts["cancelled"] + self.counts["abandoned"],
            queue_depth=len(self._pending),
            last_batch_size=self.last_size,
            busy_seconds=self.busy,
            batch_sizes=dict(sorted(self.sizes.items())),
        )


class RemoteBackend:
    """The registry's models run on remote workers (`InferenceBackend`, inputs "tensors": the
    API tier decodes and preprocesses, so no unchecked image reaches a worker; inference.wire).

    Failures answer 503 `inference_unavailable` with Retry-After; after `breaker_failures`
    failed jobs in a row (or one lost deadline) the breaker opens and calls are answered at
    once: by the in-process `fallback` when configured, else by the same 503.
    """

    inputs: InputKind = "tensors"

    def __init__(
        self,
        registry: ModelRegistry,
        inference: InferenceSettings,
        settings: RunpodSettings,
    ) -> None:
        if not settings.endpoint_url:
            raise ValueError(
                "DUPIFY_INFERENCE__BACKEND=runpod needs DUPIFY_RUNPOD__ENDPOINT_URL (e.g. "
                "https://api.runpod.ai/v2/<endpoint id>, or a `dupify worker serve` base URL)"
            )
        check_transport(settings)
        self._registry = registry
        self._settings = settings
        self._inference = inference
        self._endpoint: Endpoint | None = None
        self._lanes: dict[str, _Lane] = {}
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_s, settings.timeout_s + 1
        )
        self.fallback = (
            LocalBackend(registry, inference, inputs="tensors")
            if inference.fallback == "local"
            else None
        )

    @property
    def state(self) -> str:
        """What /readyz reports: the remote and its breaker, and the fallback if any."""
        fallback = "; fallback local" if self.fallback is not None else ""
        return f"runpod ({self.breaker.state}{fallback})"

    async def start(self) -> None:
        settings = self._settings
        assert settings.endpoint_url is not None
        self._endpoint = Endpoint(settings.endpoint_url, settings.key(), settings.connect_timeout_s)
        # One lane per model, and one per text tower (its token rows batch apart from images).
        towers = [model.id for model in self._registry.models]
        towers += [text_tower_id(m.id) for m in self._registry.models if m.text_encoder is not None]
        for tower in towers:
            lane = _Lane(tower, self._endpoint, self.breaker, settings, self._inference.queue_size)
            lane.start()
            self._lanes[tower] = lane
        if self.fallback is not None:
            await self.fallback.start()

    async def stop(self) -> None:
        for lane in self._lanes.values():
            await lane.stop()
        if self._endpoint is not None:
            await self._endpoint.aclose()
        if self.fallback is not None:
            await self.fallback.stop()

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        if model_id not in self._lanes:
            self._registry.get(model_id)  # model_not_found for an id this process does not serve
        tensors = [item for item in items if isinstance(item, np.ndarray)]
        if len(tensors) != len(items):
            raise TypeError("RemoteBackend takes preprocessed tensors, not image bytes")
        if not self.breaker.allow():
            if self.fallback is not None:
                return await self.fallback.infer(model_id, tensors)
            raise unavailable(
                "The inference workers are failing; calls pause while they recover.",
                self.breaker.retry_after(),
            )
        try:
            return list(await self._lanes[model_id].submit(tensors))
        except ApiError as error:
            if error.code != "inference_unavailable" or self.fallback is None:
                raise
            log.warning("remote %s failed; answering in this process", model_id)
            return await self.fallback.infer(model_id, tensors)

    def stats(self) -> dict[str, BatcherStats]:
        return {model_id: lane.stats() for model_id, lane in self._lanes.items()}
