"""Real test images made in memory: scikit-image's sample photos and synthetic files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_jpeg(
    name: str = "chelsea", quality: int = 90, size: tuple[int, int] | None = None
) -> bytes:
    """A real photo from scikit-image, as JPEG bytes."""
    from skimage import data

    pixels = getattr(data, name)()
    image = Image.fromarray(np.asarray(pixels)).convert("RGB")
    if size is not None:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """An incompressible PNG of the given size (large files that are still valid images)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()
