"""Shared fixtures for the inference tests: one loaded VisualModel and real sample photos."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import skimage.data

from dupify.vision.models.visual import VisualModel

# Real photographs bundled in scikit-image's wheel (no download). `cat` is left out on purpose:
# it is the same photo as `chelsea`. Grey ones are stacked to RGB below.
PHOTO_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "rocket",
    "stereo_motorcycle",
    "retina",
    "moon",
    "clock",
    "page",
    "brick",
    "grass",
    "gravel",
)


def _as_rgb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return np.ascontiguousarray(np.stack([image] * 3, axis=-1))
    return np.ascontiguousarray(image[..., :3])


@pytest.fixture(scope="session")
def photos() -> dict[str, npt.NDArray[np.uint8]]:
    loaded: dict[str, npt.NDArray[np.uint8]] = {}
    for name in PHOTO_NAMES:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
            image = image[0]
        loaded[name] = _as_rgb(image)
    return loaded


@pytest.fixture(scope="session")
def visual_model() -> VisualModel:
    return VisualModel(device="cpu", intra_op_threads=0)
