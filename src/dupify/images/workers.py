"""The async front of image decoding: a pool of spawned worker processes that runs whatever
per-image function it is given (a decode, or a decode and its measures), each on a budget."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import wait
from typing import TypeVar

from pebble import ProcessExpired, ProcessPool

from dupify.config import ImageLimits, available_cores
from dupify.errors import ApiError
from dupify.images.decoding import DecodedImage, decode_image

log = logging.getLogger("dupify.images.workers")

T = TypeVar("T")

_WARM_UP_TIMEOUT_S = 60.0
_JOIN_TIMEOUT_S = 10.0


def _prepare_worker() -> None:
    """Runs once in every worker, replacements included, so no request pays for plugin loading."""
    from PIL import Image

    Image.init()


class Decoder:
    """Decodes uploads in worker processes so a slow or crashing codec never stalls the server.

    `run` takes any module-level function of picklable arguments that works on one upload
    (the pipeline's decode-and-measure, say), so this pool knows nothing of what callers do
    with pixels. Images travel to the workers through pipes only; nothing is written to disk.
    A task that runs past `limits.decode_timeout_s` has its worker killed (pebble starts a
    replacement) and answers `image_decode_timeout`; a worker that dies answers `invalid_image`.
    """

    def __init__(self, limits: ImageLimits, workers: int) -> None:
        """`workers` processes; 0 means one per CPU core available to this process."""
        self.limits = limits
        self._workers = workers if workers > 0 else available_cores()
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # Spawn, never fork: the parent runs ONNX Runtime threads, whose locks a fork would copy.
        return ProcessPool(
            max_workers=self._workers,
            initializer=_prepare_worker,
            context=multiprocessing.get_context("spawn"),
        )

    async def decode(self, data: bytes, working_side: int = 512) -> DecodedImage:
        """The decoded upload, or the ApiError that refuses it."""
        return await self.run(decode_image, data, self.limits, working_side)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` in a worker, under the decode budget; any failure is an ApiError."""
        if not self._closed and not self._pool.active:
            # pebble gives up on the whole pool when a worker dies while no task is running
            # (e.g. the OOM killer picks an idle one); a fresh pool is the only way back.
            log.error("decoder pool broken; starting a new one")
            self._stop_pool()
            self._pool = self._new_pool()
        future = self._pool.schedule(function, args=args, timeout=self.limits.decode_timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except ApiError:
            raise
        except TimeoutError:
            raise ApiError(
                "image_decode_timeout",
                f"decoding took longer than its {self.limits.decode_timeout_s:g} s budget",
            ) from None
        except ProcessExpired as exc:
            log.warning("decoder worker died (exit code %s)", exc.exitcode)
            raise ApiError("invalid_image", "the decoder failed on this image") from exc
        except Exception as exc:
            log.error("unexpected decoder failure", exc_info=exc)
            raise ApiError("invalid_image", "the decoder failed on this image") from exc

    def warm_up(self) -> None:
        """Start every worker now (blocking) so the first requests do not wait for spawns."""
        futures = [self._pool.schedule(_prepare_worker) for _ in range(self._workers)]
        wait(futures, timeout=_WARM_UP_TIMEOUT_S)

    def close(self) -> None:
        """Stop the workers, abandoning any decode still running."""
        self._closed = True
        self._stop_pool()

    def _stop_pool(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]  # pebble leaves it unannotated
        self._pool.join(_JOIN_TIMEOUT_S)
