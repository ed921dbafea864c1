"""Decode budgets through the API: a decode past its time answers 422 image_decode_timeout while
other requests keep flowing; one account's slow uploads do not hold up another's (the fair
queue, the request and account budgets, the memory bound); a decoder killed mid-request is the
server's failure (a retry, or 503), never the image's."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dupify.config import ImageLimits
from dupify.images.cost import worst_cost
from dupify.images.workers import Decoder
from support.samples import deep_png, noise_png, photo_jpeg

# The slow image takes ~0.25 s to decode even with JPEG draft scaling; a small photo ~5 ms.
TIGHT = ImageLimits(decode_timeout_s=0.06)


def slow_progressive_jpeg() -> bytes:
    """A valid, noisy 11000x3600 progressive JPEG of ~3.4 MB: under every cap, but slow to decode
    (draft scaling still has to entropy-decode every coefficient of every scan)."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(3600, 11000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=10, progressive=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tight_decoder() -> Iterator[Decoder]:
    decoder = Decoder(TIGHT, workers=2)
    decoder.warm_up()
    yield decoder
    decoder.close()


async def test_slow_decode_times_out_and_others_are_served(
    api_factory: Callable[..., Any], tight_decoder: Decoder
) -> None:
    slow = slow_progressive_jpeg()
    fast = photo_jpeg("chelsea", size=(128, 128))
    async with api_factory(limits=TIGHT, decoder=tight_decoder) as api:
        headers = {"Authorization": f"Bearer {api.new_key()}", "Content-Type": "image/jpeg"}

        async def timed_post(body: bytes) -> tuple[Any, float]:
            response = await api.client.post("/v1/embeddings", content=body, headers=headers)
            return response, time.perf_counter()

        slow_call = asyncio.create_task(timed_post(slow))
        await asyncio.sleep(0.02)
        fast_response, fast_finished = await timed_post(fast)
        slow_response, slow_finished = await slow_call
        assert fast_response.status_code == 200
        assert slow_response.status_code == 422
        assert slow_response.json()["error"]["code"] == "image_decode_timeout"
        assert fast_finished < slow_finished  # served while the slow decode was still running
        # The pool replaced the killed worker and goes on serving.
        again = await api.client.post("/v1/embeddings", content=fast, headers=headers)
        assert again.status_code == 200


# --- decode budgets and the fair queue (issue 17, finding 4) ---------------------------------

HEAVY_REQUESTS, HEAVY_COPIES = 4, 16
MB = 1_000_000
# Budgets out of the way, so that the heavy uploads are really decoded and only the fair queue
# stands between them and another account (and a decode budget that a busy machine never hits).
ROOMY = ImageLimits(
    decode_timeout_s=30,
    max_request_decode_bytes=10**12,
    account_decode_cpu_s_per_minute=10**6,
)


def pool_memory_bound(limits: ImageLimits, workers: int) -> int:
    """docs/operations.md's bound on the decoder workers' resident memory, for these caps."""
    return workers * 100 * MB + int(1.5 * max(limits.max_decoding_bytes, worst_cost(limits)))


def worker_pids(decoder: Decoder) -> list[int]:
    return decoder.worker_pids()


def resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:  # a worker that was just replaced
        pass
    return 0


class MemoryWatch:
    """Samples, every 10 ms in a thread, the resident memory of the decoder's workers (summed)
    and of this process; keeps the peaks."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.workers_peak = 0
        self.server_start = self.server_peak = resident_bytes(os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            workers = sum(resident_bytes(pid) for pid in worker_pids(self.decoder))
            self.workers_peak = max(self.workers_peak, workers)
            self.server_peak = max(self.server_peak, resident_bytes(os.getpid()))

    def busy(self) -> bool:
        """Whether a worker is in the middle of a large decode."""
        return any(resident_bytes(pid) > 200 * MB for pid in worker_pids(self.decoder))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def heavy_pngs() -> list[str]:
    """The issue's file, 6300x6300 16-bit RGBA in ~308 KB and about a second of decoding, as
    base64 in HEAVY_COPIES copies that differ by a text chunk, so that the result cache's
    one-decode-per-distinct-image does not fold them into one."""
    png = deep_png(6300, 6300)
    after_ihdr = 8 + 25
    copies = []
    for number in range(HEAVY_COPIES):
        text = b"Comment\x00copy %d" % number
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text))
        copies.append(base64.b64encode(png[:after_ihdr] + chunk + png[after_ihdr:]).decode())
    return copies


@pytest.fixture(scope="module")
def pool_of_two() -> Iterator[Decoder]:
    decoder = Decoder(ImageLimits(), workers=2)
    decoder.warm_up()
    yield decoder
    decoder.close()


@pytest.fixture(scope="module")
def roomy_pool() -> Iterator[Decoder]:
    decoder = Decoder(ROOMY, workers=2)
    decoder.warm_up()
    yield decoder
    decoder.close()


def embed(api: Any, key: str, images: list[str]) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return api.client.post("/v1/embeddings", json={"input": images}, headers=headers)


async def latency(api: Any, key: str, image: bytes) -> float:
    started = time.perf_counter()
    response = await embed(api, key, [base64.b64encode(image).decode()])
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def photo(name: str) -> bytes:
    return photo_jpeg(name, size=(512, 512))


async def test_slow_pngs_from_one_account_do_not_delay_another_and_are_refused_whole(
    api_factory: Callable[..., Any], pool_of_two: Decoder, heavy_pngs: list[str]
) -> None:
    """The issue's must-hold, on the default caps and two decoder processes."""
    async with api_factory(decoder=pool_of_two) as api:
        heavy_key, other_key = api.new_key(), api.new_key()
        await latency(api, other_key, photo("astronaut"))  # first-call allocations
        idle = await latency(api, other_key, photo("rocket"))
        with MemoryWatch(pool_of_two) as memory:
            heavy = [
                asyncio.create_task(embed(api, heavy_key, heavy_pngs))
                for _ in range(HEAVY_REQUESTS)
            ]
            await asyncio.sleep(0)
            loaded = await latency(api, other_key, photo("coffee"))
            refused = await asyncio.gather(*heavy)
    for response in refused:
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "request_too_complex"
    assert loaded - idle < 1.0  # the bound on the other account's delay
    assert memory.workers_peak < pool_memory_bound(ImageLimits(), workers=2)
    assert memory.workers_peak < 2 * 100 * MB  # refused from the headers, never decoded
    print(
        f"\nidle {idle:.3f} s, beside the heavy requests {loaded:.3f} s; decoder workers peak "
        f"{memory.workers_peak / MB:.0f} MB (bound {pool_memory_bound(ImageLimits(), 2) / MB:.0f}"
        f" MB); server process grew {(memory.server_peak - memory.server_start) / MB:.0f} MB"
    )


async def test_the_fair_queue_serves_another_account_beside_a_backlog_of_slow_pngs(
    api_factory: Callable[..., Any], roomy_pool: Decoder, heavy_pngs: list[str]
) -> None:
    """The same traffic with the request and account budgets out of the way, so 64 slow PNGs
    queue for the two workers: the other account still goes next, and memory stays bounded."""
    async with api_factory(limits=ROOMY, decoder=roomy_pool) as api:
        heavy_key, other_key = api.new_key(), api.new_key()
        await latency(api, other_key, photo("astronaut"))
        idle = await latency(api, other_key, photo("rocket"))
        with MemoryWatch(roomy_pool) as memory:
            heavy = [
                asyncio.create_task(embed(api, heavy_key, heavy_pngs))
                for _ in range(HEAVY_REQUESTS)
            ]
            async with asyncio.timeout(30):
                while not memory.busy():
                    await asyncio.sleep(0.01)
            # Several probes over a few seconds of the backlog: every one goes next.
            loaded = 0.0
            for name in ("coffee", "chelsea", "camera", "coins"):
                loaded = max(loaded, await latency(api, other_key, photo(name)))
                await asyncio.sleep(0.5)
            for task in heavy:
                task.cancel()
            await asyncio.gather(*heavy, return_exceptions=True)
    assert loaded - idle < 1.0
    assert memory.workers_peak < pool_memory_bound(ROOMY, workers=2)
    print(
        f"\nidle {idle:.3f} s, beside {HEAVY_REQUESTS * HEAVY_COPIES} queued slow PNGs at most "
        f"{loaded:.3f} s; decoder workers peak {memory.workers_peak / MB:.0f} MB (bound "
        f"{pool_memory_bound(ROOMY, 2) / MB:.0f} MB); server process grew "
        f"{(memory.server_peak - memory.server_start) / MB:.0f} MB"
    )


async def test_an_account_past_its_decode_time_gets_429_with_retry_after(
    api_factory: Callable[..., Any],
) -> None:
    # A millisecond a minute: the first image (an incompressible 1000 px PNG, some 10 ms of
    # decoding) spends it and more.
    stingy = ImageLimits(account_decode_cpu_s_per_minute=0.001)
    decoder = Decoder(stingy, workers=1)
    try:
        async with api_factory(limits=stingy, decoder=decoder) as api:
            spender, other = api.new_key(), api.new_key()
            large = base64.b64encode(noise_png(1000, 1000)).decode()
            first = await embed(api, spender, [large])
            again = await embed(api, spender, [base64.b64encode(photo("coffee")).decode()])
            bystander = await embed(api, other, [base64.b64encode(photo("coffee")).decode()])
    finally:
        decoder.close()
    assert first.status_code == 200
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "decode_budget_exceeded"
    assert int(again.headers["Retry-After"]) >= 1
    assert bystander.status_code == 200


# --- the decoder's own failure is not the client's (issue 17, finding 5) ---------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_decoder_workers_killed_mid_request_are_never_blamed_on_the_image(
    api_factory: Callable[..., Any],
    roomy_pool: Decoder,
    heavy_pngs: list[str],
    stop: signal.Signals,
) -> None:
    async with api_factory(limits=ROOMY, decoder=roomy_pool) as api:
        key = api.new_key()
        with MemoryWatch(roomy_pool) as memory:
            request = asyncio.create_task(embed(api, key, heavy_pngs[:1]))
            async with asyncio.timeout(30):
                while not memory.busy():
                    await asyncio.sleep(0.01)
            for pid in worker_pids(roomy_pool):
                os.kill(pid, stop)
            response = await request
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "decoder_unavailable"
        assert response.headers["Retry-After"]
