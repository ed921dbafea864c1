"""The async front of image decoding: a pool of spawned worker processes that runs whatever
per-image function it is given (a decode, or a decode and its measures), each on a budget,
behind a fair queue between accounts."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from pebble import ProcessExpired, ProcessPool

from dupify.config import ImageLimits, available_cores
from dupify.errors import ApiError
from dupify.images.cost import decode_cost
from dupify.images.decoding import DecodedImage, decode_image
from dupify.images.fairness import CpuAllowance, FairQueue

log = logging.getLogger("dupify.images.workers")

T = TypeVar("T")

_WARM_UP_TIMEOUT_S = 60.0
_JOIN_TIMEOUT_S = 10.0
# A replacement worker is up well within a second.
_RETRY_AFTER_S = 1
# How long a worker's death is left to settle before its task is retried, and how often a
# waiting task checks that its pool has not broken (pebble polls its workers every 0.1 s).
_SETTLE_S = 0.3
_POOL_CHECK_S = 0.5
# A task whose decode costs at least this (dupify.images.cost) gives its freed heap back to the
# system when it ends. Smaller ones leave theirs for the next task to reuse: trimming after a
# 512 px photo added a quarter to its decode time, in the trim and in faulting pages back in.
_TRIM_FROM_BYTES = 16 * 1024 * 1024
# The fair queue's line for work done for no account: the local tools and the warm-up.
_OPERATOR = ""
# How a worker ends when told to stop rather than failing on its upload: pebble's SIGTERM
# handler exits with the signal's number; a signal before the handler is installed, or a
# stop by SIGINT or SIGHUP (a closing terminal), shows as minus its number.
_STOPPED = frozenset(
    {signal.SIGTERM.value, *(-s.value for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))}
)


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
    has its worker killed (pebble starts a replacement) and answers `image_decode_timeout`.

    A worker that dies mid-task is replaced and the task tried once more on the new one: a stop
    from outside (SIGTERM to the process group, a closing terminal, a broken pool) is never the
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
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # Spawn, never fork: the parent runs ONNX Runtime threads, whose locks a fork would copy.
        return ProcessPool(
            max_workers=self._workers,
            initializer=_prepare_worker,
            context=multiprocessing.get_context("spawn"),
        )

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
                return await self._in_worker(function, args, trim)
            except TimeoutError:
                timeout = self.limits.decode_timeout_s
                error = ApiError(
                    "image_decode_timeout", f"decoding took longer than its {timeout:g} s budget"
                )
                return error, time.monotonic() - started
            except (ProcessExpired, BrokenProcessPool) as exc:
                exit_code = exc.exitcode if isinstance(exc, ProcessExpired) else None
                stopped_from_outside |= exit_code is None or exit_code in _STOPPED
                log.warning("decoder worker died (exit code %s, attempt %d)", exit_code, attempt)
                if attempt == 1:
                    # Let pebble see every worker that died with this one (a process group's
                    # SIGTERM stops them all) and give up the pool if they all did, so that
                    # the retry goes to a working pool.
                    await asyncio.sleep(_SETTLE_S)
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

    async def _in_worker(
        self, function: Callable[..., T], args: tuple[object, ...], trim: bool
    ) -> tuple[T | ApiError, float]:
        """`_measured(trim, function, *args)` in a worker of a working pool. Raises
        BrokenProcessPool if the pool breaks with the task in it: pebble then drops tasks that
        it had not yet handed to a worker, whose futures would never be resolved."""
        if not self._closed and not self._pool.active:
            # pebble gives up on the whole pool when a worker dies while no task is running
            # (e.g. the OOM killer picks an idle one); a fresh pool is the only way back.
            log.error("decoder pool broken; starting a new one")
            self._replace_pool()
        pool = self._pool
        try:
            future = pool.schedule(
                _measured, args=(trim, function, *args), timeout=self.limits.decode_timeout_s
            )
        except RuntimeError as exc:  # the pool broke (or was closed) since it was looked at
            raise BrokenProcessPool(str(exc)) from exc
        outcome = asyncio.wrap_future(future)
        try:
            while not (await asyncio.wait({outcome}, timeout=_POOL_CHECK_S))[0]:
                if not pool.active:
                    raise BrokenProcessPool("the decoder pool broke with this task in it")
            measured: tuple[T | ApiError, float] = outcome.result()
            return measured
        finally:
            outcome.cancel()  # no-op when done; else pebble stops the task (and its worker)

    def _replace_pool(self) -> None:
        broken, self._pool = self._pool, self._new_pool()
        # Off the event loop: a broken pool's threads may be stuck writing a task into a pipe
        # that no worker reads until the pool closes it.
        threading.Thread(target=_stop, args=(broken,), daemon=True).start()

    def warm_up(self) -> None:
        """Start every worker now (blocking) so the first requests do not wait for spawns."""
        futures = [self._pool.schedule(_prepare_worker) for _ in range(self._workers)]
        wait(futures, timeout=_WARM_UP_TIMEOUT_S)

    def close(self) -> None:
        """Stop the workers, abandoning any decode still running."""
        self._closed = True
        _stop(self._pool)


def _stop(pool: ProcessPool) -> None:
    pool.stop()  # type: ignore[no-untyped-call]  # pebble leaves it unannotated
    pool.join(_JOIN_TIMEOUT_S)


def _mib(cost: int) -> int:
    return round(cost / (1024 * 1024))
