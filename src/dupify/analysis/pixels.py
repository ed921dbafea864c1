"""Checks and conversions shared by the analysis functions: valid RGB input and its luma."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# ITU-R BT.601 luma weights: the ones Pillow's convert("L") and most image tools use.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def require_rgb(pixels: npt.NDArray[np.uint8]) -> None:
    """Raise ValueError unless `pixels` is a non-empty HxWx3 uint8 RGB array."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 RGB pixels, got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got {pixels.shape}")


def luma(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """HxW float32 luma in 0..255 (BT.601 weights on the gamma-encoded values)."""
    require_rgb(pixels)
    return pixels.astype(np.float32) @ _LUMA_WEIGHTS
