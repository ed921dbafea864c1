"""A decode past its budget answers 422 image_decode_timeout while other requests keep flowing."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dupify.config import ImageLimits
from dupify.images.workers import Decoder
from support.samples import photo_jpeg

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
