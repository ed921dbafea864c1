"""The async front of image decoding: a pool of worker processes (dupify.images.pool) that runs
whatever per-image function it is given (a decode, or a decode and its measures), each on a
budget, behind a fair queue between accounts."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from dupify.config import ImageLimits, available_cores
from dupify.errors import ApiError
from dupify.images.cost import decode_cost
from dupify.images.decoding import DecodedImage, decode_image
from dupify.images.fairness import CpuAllowance, FairQueue
from dupify.images.pool import WorkerDied, WorkerPool

log = logging.getLogger("dupify.images.workers")

T = TypeVar("T")

_WARM_UP_TIMEOUT_S = 60.0
# A replacement worker is up well within a second.
_RETRY_AFTER_S = 1
# A task whose decode costs at least this (dupify.images.cost) gives its freed heap back to the
# system when it ends. Smaller ones leave theirs for the next task to reuse: trimming after a
# 512 px photo added a quarter to its decode time, in the trim and in faulting pages back in.
_TRIM_FROM_BYTES = 16 * 1024 * 1024
# The fair queue's line for work done for no account: the local tools and the warm-up.
_OPERATOR = ""
# How a worker ends when told to stop rather than failing on its upload (a SIGTERM from systemd
# or to the process group, a Ctrl-C, a closing terminal): minus the signal's number.
_STOPPED = frozenset(-s.value for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))


def _prepare_worker() -> None:
    """Runs once in every worker, replacements included, so no request pays for plugin loading."""
    from PIL import Image

    Image.init()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    return trim


def _measured(trim: bool, function: Callable[..., T], *args: object) -> tuple[T | ApiError, float]:
    """Runs in the worker: `function(*args)` (or the ApiError refusing the upload) and the CPU
    seconds it took. Then, with `trim` (a large decode), the heap it freed goes back to the
    system (glibc keeps it otherwise), so an idle worker holds its baseline, not its largest
    image."""
    started = time.process_time()
    outcome: T | ApiError
    try:
        outcome = function(*args)
    except ApiError as error:
        outcome = error
    seconds = time.process_time() - started
    trimmer = _malloc_trim() if trim else None
    if trimmer is not None:
        trimmer(0)
    return outcome, seconds


class Decoder:
    """Decodes uploads in worker processes so a slow or crashing codec never stalls the server.

    `run` takes any module-level function of picklable arguments that works on one upload
    (the pipeline's decode-and-measure, say), so this pool knows nothing of what callers do
    with pixels. Images travel to the workers through pipes only; nothing is written to disk.

    Budgets (docs/operations.md, "Decode budgets and the fair queue"): each upload has a cost
    read from its header (`dupify.images.cost`); `admit` refuses a request whose uploads cost
    more than `limits.max_request_decode_bytes` (422 `request_too_complex`) or whose account has
    used its decoder CPU time (429 `decode_budget_exceeded`). Uploads then wait in a
    `FairQueue`, which shares the workers between accounts by cost and keeps the cost decoding
    at once within `limits.max_decoding_bytes`. A task that runs past `limits.decode_timeout_s`
    has its worker killed (and replaced) and answers `image_decode_timeout`.

    A worker that dies mid-task is replaced and the task tried once more on the new one: a stop
    from outside (SIGTERM to the process group, a closing terminal, the decoder closed) is not the
    upload's fault, so if it strikes twice the answer is 503 `decoder_unavailable` with
    `Retry-After`; an upload on which the worker dies twice otherwise (killed by the OOM
    killer, a crashing codec) is `invalid_image`, and is not tried again.
    """

    def __init__(self, limits: ImageLimits, workers: int) -> None:
        """`workers` processes; 0 means one per CPU core available to this process."""
        self.limits = limits
        self._workers = workers if workers > 0 else available_cores()
        self._closed = False
        self._queue = FairQueue(self._workers, limits.max_decoding_bytes)
        self._allowance = CpuAllowance(limits.account_decode_cpu_s_per_minute)
        # Fresh interpreters, never forks: the server runs ONNX Runtime threads, whose locks a
        # fork would copy.
        self._pool = WorkerPool(self._workers, _prepare_worker)

    def admit(self, account: str | None, costs: Sequence[int]) -> None:
        """Refuse, before any of it is decoded, a request whose uploads (`costs`, from
        `decode_cost`) are over the request budget, or whose account is out of decoder time.
        Work for no account (`None`: the local tools, the warm-up) is never refused."""
        if account is None:
            return
        total, budget = sum(costs), self.limits.max_request_decode_bytes
        if total > budget:
            raise ApiError(
                "request_too_complex",
                f"decoding these images would cost about {_mib(total)} MiB (pixels times bytes "
                f"a pixel, from their headers); a request may cost {_mib(budget)} MiB: send "
                "fewer or smaller images a request",
            )
        self._allowance.check(account)

    async def decode(self, data: bytes, working_side: int = 512) -> DecodedImage:
        """The decoded upload, or the ApiError that refuses it (work for no account)."""
        cost = decode_cost(data, self.limits, working_side)
        return await self.run(decode_image, data, self.limits, working_side, cost=cost)

    async def run(
        self,
        function: Callable[..., T],
        *args: object,
        account: str | None = None,
        cost: int = 0,
    ) -> T:
        """`function(*args)` in a worker once the fair queue gives `account` its turn, under
        the decode budget; any failure is an ApiError. The CPU time it took is charged to the
        account's allowance (`cost` is the header's estimate, for the queue)."""
        if self._closed:
            raise RuntimeError("the decoder is closed")
        async with self._queue.turn(_OPERATOR if account is None else account, cost):
            outcome, seconds = await self._attempts(function, args, cost >= _TRIM_FROM_BYTES)
        if account is not None:
            self._allowance.charge(account, seconds)
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    async def _attempts(
        self, function: Callable[..., T], args: tuple[object, ...], trim: bool
    ) -> tuple[T | ApiError, float]:
        """The task's outcome and the CPU seconds it cost (wall time where the worker did not
        live to say), with one more try on a fresh worker if the first one died."""
        stopped_from_outside = False
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                measured: tuple[T | ApiError, float] = await self._pool.run(
                    _measured, trim, function, *args, budget_s=self.limits.decode_timeout_s
                )
                return measured
            except TimeoutError:
                timeout = self.limits.decode_timeout_s
                error = ApiError(
                    "image_decode_timeout", f"decoding took longer than its {timeout:g} s budget"
                )
                return error, time.monotonic() - started
            except WorkerDied as exc:
                stopped_from_outside |= exc.exit_code is None or exc.exit_code in _STOPPED
                log.warning(
                    "decoder worker died (exit code %s, attempt %d)", exc.exit_code, attempt
                )
                if self._closed:
                    break
            except Exception as exc:
                log.error("unexpected decoder failure", exc_info=exc)
                error = ApiError("invalid_image", "the decoder failed on this image")
                return error, time.monotonic() - started
        if stopped_from_outside or self._closed:
            error = ApiError(
                "decoder_unavailable",
                "the image decoder stopped while working on this request; retry shortly",
                headers={"Retry-After": str(_RETRY_AFTER_S)},
            )
        else:
            error = ApiError("invalid_image", "the decoder failed on this image, twice")
        return error, time.monotonic() - started

    def warm_up(self) -> None:
        """Block until every worker is up, so the first requests do not wait for them to start
        (call before the decoder serves; any thread)."""
        self._pool.warm_up(_WARM_UP_TIMEOUT_S)

    def worker_pids(self) -> list[int]:
        """The worker processes now, for monitoring (and the memory tests)."""
        return self._pool.pids

    def close(self) -> None:
        """Stop the workers, abandoning any decode still running."""
        self._closed = True
        self._pool.close()


def _mib(cost: int) -> int:
    return round(cost / (1024 * 1024))
