"""The small base class every image model extends: `load` its graph, `preprocess` pixels (one
image, or straight into a batch), `predict` a batch, over a session the session policy opens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from dupify.analysis.frames import RegionSpace
from dupify.analysis.pixels import require_rgb
from dupify.inference.assets import AssetError
from dupify.inference.session import OrtSession, SessionPolicy
from dupify.inference.zero_shot import ZeroShotScoring

FloatArray = npt.NDArray[np.float32]
Array = npt.NDArray[Any]
Pixels = npt.NDArray[np.uint8]  # HxWx3 RGB, as the decoder gives it

# The output key every model's `predict` must fill: (N, dimensions) float32, L2-normalised rows.
EMBEDDING = "embedding"
# The output of a model with a `region_space`: (N, cells, channels) float32 cell descriptors.
REGIONS = "regions"
# What a model embeds; a model with a text tower (an operator's CLIP or SigLIP) has both.
IMAGE = "image"
TEXT = "text"


def text_tower_id(model_id: str) -> str:
    """The inference backend's name for a model's text tower (its own micro-batcher)."""
    return f"{model_id}#text"


class TextEncoder(Protocol):
    """A model's text tower: strings -> token rows (`tokenize`, pure), rows -> unit vectors in
    the image tower's space (`predict`, on a stacked batch of rows)."""

    input_shape: tuple[int, ...]  # one tokenised text: (2, max_length) int64, ids then mask

    def tokenize(self, texts: Sequence[str]) -> list[Array]: ...

    def token_count(self, row: Array) -> int: ...

    def predict(self, batch: Array) -> Mapping[str, Array]: ...


@dataclass(frozen=True)
class Head:
    """A model output besides the embedding that a feature reads (e.g. safety, labels)."""

    output: str  # the key of `predict`'s outputs that holds it
    version: str  # what `/v1/analyze` reports for the feature; part of its cache key


class ImageModel(ABC):
    """An image model: pixels -> one input tensor (`preprocess`), tensors -> outputs (`predict`).

    `load` returns the model's ONNX graph (read from pinned files, or built); the constructor
    opens it with the session policy and runs one input through `predict`, so a graph that is
    not what the class expects fails at start-up, not on the first request. `preprocess` is
    pure (no session state), so callers may run it in any thread or process; `preprocess_batch`
    is what a local runner feeds `predict` with: every image's `preprocess`, written into one
    batch. `predict` takes a stacked batch and returns named arrays, each with N rows,
    `EMBEDDING` among them; `heads` names the other outputs that analysis features read.
    """

    id: ClassVar[str]  # public model id, e.g. "dupify-visual-1"; names the model *and* version
    version: ClassVar[str]
    dimensions: ClassVar[int]  # length of one embedding
    task: ClassVar[str] = "embedding"  # what /v1/models lists it for
    created: ClassVar[int]  # fixed Unix time of this version (the `created` of /v1/models)
    input_shape: ClassVar[tuple[int, ...]]  # one preprocessed tensor: one row of a batch
    working_side: ClassVar[int]  # smallest shorter side `preprocess` needs; decoders may
    # downscale to it, never below
    heads: ClassVar[Mapping[str, Head]] = {}
    label_names: tuple[str, ...] = ()  # the classes of a "labels" head, in output order
    modalities: ClassVar[tuple[str, ...]] = (IMAGE,)
    text_encoder: TextEncoder | None = None  # set by models whose modalities include text
    zero_shot: ZeroShotScoring | None = None  # how such a model scores labels zero-shot
    # Set by a model whose `predict` also answers cell descriptors (`REGIONS`) for the duplicate
    # verdicts' shared-frame check (dupify.analysis.frames); None: it gives none.
    region_space: RegionSpace | None = None

    def __init__(self, policy: SessionPolicy) -> None:
        self.policy = policy
        self.session: OrtSession = policy.session(self.load())
        self._check_outputs()

    @abstractmethod
    def load(self) -> bytes | Path:
        """The serialised ONNX graph this model runs (or its checked file: a large export, or
        one with external data, is opened from disk), checked against what its version pins."""

    @abstractmethod
    def preprocess(self, pixels: Pixels) -> FloatArray:
        """HxWx3 uint8 RGB pixels of any size -> one tensor of `input_shape`."""

    def preprocess_into(self, pixels: Pixels, out: FloatArray) -> None:
        """`preprocess(pixels)` written into `out` (one row of a batch). A model whose
        preprocessing ends in one arithmetic pass overrides it to write its result there
        directly, the same values bit for bit, rather than into a tensor that is then copied."""
        out[...] = self.preprocess(pixels)

    def preprocess_batch(self, images: Sequence[Pixels]) -> FloatArray:
        """Every image's `preprocess`, as one (N, *input_shape) batch for `predict`: what the
        local backend's runners do in their own thread, so a batch is built with one float
        write per value and no hop through another thread per image."""
        batch = np.empty((len(images), *self.input_shape), dtype=np.float32)
        for pixels, row in zip(images, batch, strict=True):
            self.preprocess_into(pixels, row)
        return batch

    @abstractmethod
    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        """(N, *input_shape) float32 -> named outputs, each with N rows, `EMBEDDING` among them."""

    @property
    def providers(self) -> list[str]:
        return self.session.providers

    def _check_outputs(self) -> None:
        try:
            outputs = self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))
        except Exception as exc:
            raise AssetError(f"{self.id}: the graph does not run as expected: {exc}") from exc
        shapes = {key: np.shape(value) for key, value in outputs.items()}
        expected = {EMBEDDING: (1, self.dimensions)}
        if "labels" in self.heads:
            expected[self.heads["labels"].output] = (1, len(self.label_names))
        wrong = {key: shape for key, shape in expected.items() if shapes.get(key) != shape}
        if wrong or any(shape[:1] != (1,) for shape in shapes.values()):
            raise AssetError(f"{self.id}: unexpected graph outputs {shapes}, expected {expected}")


def checked_pixels(pixels: Pixels) -> Pixels:
    """`pixels` as a C-contiguous array, after checking they are a non-empty HxWx3 uint8 image
    (`require_rgb`)."""
    require_rgb(pixels)
    return np.ascontiguousarray(pixels)


def resized(
    pixels: Pixels, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> Pixels:
    """Pillow's bilinear resize of `pixels` (of `box`, in source pixels) to `size` (width,
    height). Pixels already of that size, with no box, come back as they are: Pillow would
    only copy them (the decoder's 256 px working image is what several models take)."""
    if box is None and (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    image = Image.fromarray(pixels)
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box))


def checked_batch(batch: npt.ArrayLike, input_shape: tuple[int, ...]) -> FloatArray:
    """A `predict` batch as contiguous float32, after checking it is (N, *input_shape)."""
    array = np.ascontiguousarray(batch, dtype=np.float32)
    if array.ndim != 1 + len(input_shape) or array.shape[1:] != input_shape:
        expected = ", ".join(str(side) for side in input_shape)
        raise ValueError(f"expected a (N, {expected}) batch, got {array.shape}")
    return array
