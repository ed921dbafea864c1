"""The protocol every bundled image model satisfies, so the registry and batcher stay generic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Array = npt.NDArray[Any]

# The output key every model's `predict` must fill: (N, dimensions) float32, L2-normalised rows.
EMBEDDING = "embedding"


@runtime_checkable
class ImageModel(Protocol):
    """An image model: pixels -> one input tensor (`preprocess`), tensors -> outputs (`predict`).

    `preprocess` is pure (no session state), so callers may run it in any thread or process.
    `predict` takes a stacked batch and returns a mapping of named arrays, each with N rows, that
    holds at least `EMBEDDING`; extra keys (e.g. "nsfw") carry the model's other heads.
    """

    @property
    def id(self) -> str:
        """Public model id, e.g. "dupify-visual-1"; names the model *and* its version."""
        ...

    @property
    def version(self) -> str: ...

    @property
    def dimensions(self) -> int:
        """Length of one embedding."""
        ...

    @property
    def task(self) -> str:
        """What the model is listed for in /v1/models, e.g. "embedding"."""
        ...

    @property
    def created(self) -> int:
        """Fixed Unix timestamp of this model version (the `created` field of /v1/models)."""
        ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed tensor, i.e. one row of a `predict` batch."""
        ...

    @property
    def working_side(self) -> int:
        """Smallest shorter side the pixels need; decoders may downscale to it, never below."""
        ...

    def preprocess(self, pixels: npt.NDArray[np.uint8]) -> FloatArray:
        """HxWx3 uint8 RGB pixels of any size -> one tensor of `input_shape`."""
        ...

    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        """(N, *input_shape) float32 -> named outputs, each with N rows, `EMBEDDING` among them."""
        ...


def checked_batch(batch: npt.ArrayLike, input_shape: tuple[int, ...]) -> FloatArray:
    """A `predict` batch as contiguous float32, after checking it is (N, *input_shape)."""
    array = np.ascontiguousarray(batch, dtype=np.float32)
    if array.ndim != 1 + len(input_shape) or array.shape[1:] != input_shape:
        expected = ", ".join(str(side) for side in input_shape)
        raise ValueError(f"expected a (N, {expected}) batch, got {array.shape}")
    return array


def unit_rows(matrix: npt.ArrayLike) -> FloatArray:
    """Each row scaled to length 1, as float32. An all-zero row stays zero rather than dividing
    by zero (pooled ReLU features can be all zero in principle: a blank input kills every unit)."""
    rows = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)
