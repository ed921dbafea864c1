"""dupify-semantic-1: EfficientNet-Lite0's 1280-d pooled features and its ImageNet-1k labels."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dupify.analysis.vectors import unit_rows
from dupify.inference.models.base import (
    EMBEDDING,
    Array,
    FloatArray,
    Head,
    ImageModel,
    Pixels,
    checked_batch,
    checked_pixels,
    resized,
)
from dupify.inference.models.effnet_graph import (
    EMBEDDING_DIMS,
    EMBEDDING_OUTPUT,
    INPUT_NAME,
    INPUT_SIDE,
    NUM_CLASSES,
    PROBABILITIES_OUTPUT,
    load_or_build,
)
from dupify.inference.session import SessionPolicy

PROBABILITIES = "probabilities"
# What `analyze` reports under `models.labels`: the label set and the weights that produce it.
LABELS_VERSION = "imagenet-effnet-lite0@1"
LABELS_RESOURCE = "imagenet_classes.txt"

RESIZE_SIDE = 256
# The training pipeline's normalisation: (x - 127) / 128 per channel, RGB order.
PIXEL_MEAN = np.float32(127.0)
PIXEL_SCALE = np.float32(1.0 / 128.0)


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the classifier's output order (project data)."""
    text = (
        importlib.resources.files("dupify.inference.models")
        .joinpath(LABELS_RESOURCE)
        .read_text(encoding="utf-8")
    )
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != NUM_CLASSES:
        raise RuntimeError(f"{LABELS_RESOURCE} has {len(labels)} labels, expected {NUM_CLASSES}")
    return labels


def preprocess(pixels: Pixels) -> FloatArray:
    """HxWx3 uint8 RGB -> (3, 224, 224) float32: shorter side 256, centre crop 224, (x-127)/128.

    The centre crop is taken in source coordinates and resized straight to 224x224 (PIL's `box`):
    the same pixels as resizing the whole image then cropping, without materialising a huge
    intermediate for a long thin image (1x12000 would otherwise become 256x3,072,000).
    """
    tensor = np.empty((3, INPUT_SIDE, INPUT_SIDE), dtype=np.float32)
    preprocess_into(pixels, tensor)
    return tensor


def preprocess_into(pixels: Pixels, out: FloatArray) -> None:
    """`preprocess(pixels)`, written into `out` (channels first) in two passes: both steps are
    exact in float32 (an integer minus 127, times a power of two)."""
    pixels = checked_pixels(pixels)
    height, width = pixels.shape[:2]
    scale = RESIZE_SIDE / min(width, height)
    half = INPUT_SIDE / 2 / scale  # half the crop's side, in source pixels
    centre_x, centre_y = width / 2, height / 2
    box = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    crop = resized(pixels, (INPUT_SIDE, INPUT_SIDE), box)
    np.subtract(crop.transpose(2, 0, 1), PIXEL_MEAN, out=out)
    np.multiply(out, PIXEL_SCALE, out=out)


class SemanticModel(ImageModel):
    """Look-alike embeddings (similar things, not copies of one photo) and ImageNet labels.

    One forward pass gives both: `predict` returns "embedding" (N, 1280) unit rows and
    "probabilities" (N, 1000) softmax rows in `imagenet_labels()` order.
    """

    id = "dupify-semantic-1"
    version = "1"
    dimensions = EMBEDDING_DIMS
    created = 1_735_689_600  # 2025-01-01T00:00:00Z; fixed for version "1", never bumped in place
    labels_version = LABELS_VERSION
    input_shape = (3, INPUT_SIDE, INPUT_SIDE)
    working_side = RESIZE_SIDE
    heads = {"labels": Head(output=PROBABILITIES, version=LABELS_VERSION)}

    def __init__(
        self,
        policy: SessionPolicy,
        cache_dir: Path | None = None,
        weights_path: Path | None = None,
    ) -> None:
        self._cache_dir = cache_dir
        self._weights_path = weights_path
        self.label_names = imagenet_labels()
        super().__init__(policy)

    def load(self) -> bytes:
        graph, self.graph_path = load_or_build(self._cache_dir, self._weights_path)
        return graph

    def preprocess(self, pixels: Pixels) -> FloatArray:
        return preprocess(pixels)

    def preprocess_into(self, pixels: Pixels, out: FloatArray) -> None:
        preprocess_into(pixels, out)

    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        """(N, 3, 224, 224) preprocessed tensors -> unit-norm embeddings and class probabilities."""
        batch = checked_batch(batch, self.input_shape)
        if len(batch) == 0:
            return {
                EMBEDDING: np.zeros((0, self.dimensions), dtype=np.float32),
                PROBABILITIES: np.zeros((0, NUM_CLASSES), dtype=np.float32),
            }
        pooled, probabilities = self.session.run(
            [EMBEDDING_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: batch}
        )
        return {
            EMBEDDING: unit_rows(pooled),
            PROBABILITIES: probabilities.astype(np.float32, copy=False),
        }
