"""dupify-copy-1: copy detection from open-nsfw's stage-3 features, GeM-pooled and whitened.

The descriptor answers "is this an edited copy of that photo?" rather than "do they look
alike?" (what dupify-visual-1's final average pool encodes). Measured on the copy-detection
benchmark (`bench/quality/`, docs/quality.md), each step kept because it won there:

1. the whole image, aspect not kept, resized to 256x256 (no centre crop: a crop would throw
   away the borders that padding, screenshots and crops move);
2. the open-nsfw ResNet-50 cut inside its third stage (`STAGE3_TENSOR`, the output of the
   fourth of its six residual blocks: 512 channels at stride 16, a 16x16 map),
   whose features are less semantic and more about this photo's own content than the last
   stage's; the rest of the network and the classifier are left out of the graph, which
   pays for the larger input;
3. GeM pooling (p = 3) over that map, then L2 normalisation;
4. whitening of the edit covariance: the descriptor minus a mean, times the inverse square
   root of the covariance of (edited copy - its photo) over augmented background photos
   (flips, quarter turns, AugLy's edits), shrunk towards a multiple of the identity. The
   directions that edits move a descriptor along count less, which is how mirroring and
   90/180/270-degree turns are handled: they were among the fitted edits. The arrays ship
   in `copy_whitening.npz`; `bench/quality/fit_copy.py` fits them (only on
   `bench/quality/background/`, never on the benchmark's photos) and says how;
5. L2 normalisation again: 512-d unit float32 rows, compared by cosine.

Beside the descriptor, `predict` answers `REGIONS`: GeM over each cell of an 8x8 grid of the
same map (2x2 positions each), which the duplicate verdicts use to tell a shared frame from
shared content (`dupify.analysis.frames`); `region_space` says how to whiten a union of cells.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from dupify.analysis.frames import GRID, RegionSpace
from dupify.analysis.vectors import unit_rows
from dupify.inference.assets import AssetError
from dupify.inference.models.base import (
    EMBEDDING,
    REGIONS,
    Array,
    FloatArray,
    ImageModel,
    Pixels,
    checked_batch,
    checked_pixels,
    resized,
)
from dupify.inference.models.visual import MEAN_BGR, OPEN_NSFW
from dupify.inference.session import SessionPolicy

INPUT_SIDE = 256
# The output of the fourth of the six residual blocks of open-nsfw's third stage (the graph is
# pinned by sha256, so its tensor names are fixed): (N, 512, side/16, side/16). Measured on the
# benchmark, blocks 2 to 6 of that stage scored micro-AP 0.916, 0.924, 0.930, 0.923, 0.905 (the
# stage's end) and the fourth stage's end 0.83.
STAGE3_TENSOR = "Relu_33:0"
CHANNELS = 512
GEM_POWER = 3.0
GEM_FLOOR = np.float32(1e-6)  # GeM's clamp: a zero activation to a small positive power
WHITENING_RESOURCE = "copy_whitening.npz"


@functools.cache
def whitening() -> tuple[FloatArray, FloatArray]:
    """The shipped (mean, projection): (512,) and (512, 512) float32, fitted by
    `bench/quality/fit_copy.py`."""
    resource = importlib.resources.files("dupify.inference.models").joinpath(WHITENING_RESOURCE)
    with resource.open("rb") as handle, np.load(handle) as arrays:
        mean = np.asarray(arrays["mean"], dtype=np.float32)
        projection = np.asarray(arrays["projection"], dtype=np.float32)
    if mean.shape != (CHANNELS,) or projection.shape[0] != CHANNELS:
        raise AssetError(
            f"{WHITENING_RESOURCE} has mean {mean.shape}, projection {projection.shape}"
        )
    return mean, projection


def stage3_graph(model_bytes: bytes, side: int = INPUT_SIDE) -> tuple[bytes, str]:
    """open-nsfw cut at `STAGE3_TENSOR`, taking NHWC (N, side, side, 3), in memory.

    Only the nodes the stage-3 tensor depends on are kept (the rest of the network, the pool
    and the classifier are dropped, with their weights). Returns (graph, input name).
    """
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    if STAGE3_TENSOR not in producers:
        raise AssetError(f"the open-nsfw graph has no tensor {STAGE3_TENSOR!r}")
    needed: set[int] = set()
    pending = [STAGE3_TENSOR]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    kept = [node for node in graph.node if id(node) in needed]
    used = {name for node in kept for name in node.input}
    initializers = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.append(
        onnx.helper.make_tensor_value_info(STAGE3_TENSOR, onnx.TensorProto.FLOAT, None)
    )
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (side, side, 3), strict=True):
        dim.dim_value = value
    return model.SerializeToString(), graph.input[0].name


def preprocess(pixels: Pixels, side: int = INPUT_SIDE) -> FloatArray:
    """HxWx3 uint8 RGB -> (side, side, 3) float32 BGR minus open-nsfw's mean: the whole image
    resized (bilinear, aspect not kept)."""
    tensor = np.empty((side, side, 3), dtype=np.float32)
    preprocess_into(pixels, tensor)
    return tensor


def preprocess_into(pixels: Pixels, out: FloatArray) -> None:
    """`preprocess(pixels)` at `out`'s side, written into `out`."""
    square = resized(checked_pixels(pixels), (out.shape[1], out.shape[0]))
    np.subtract(square[:, :, ::-1], MEAN_BGR, out=out)


def power_means(
    features: Array, grid: int = 1, power: float = GEM_POWER
) -> npt.NDArray[np.float64]:
    """GeM's inner mean of (N, C, H, W) non-negative maps over each cell of a grid x grid split
    -> (N, grid * grid, C) float64, cells row-major. H and W must be multiples of `grid`. The
    cells are equal in size, so their mean is the whole map's: one pass gives both."""
    count, channels, height, width = features.shape
    if height % grid or width % grid:
        raise ValueError(f"a {height}x{width} map does not split into a {grid}x{grid} grid")
    clamped = np.maximum(np.asarray(features, dtype=np.float32), GEM_FLOOR)
    cells = clamped.reshape(count, channels, grid, height // grid, grid, width // grid)
    pooled = np.power(cells, np.float32(power)).mean(axis=(3, 5), dtype=np.float64)
    return np.ascontiguousarray(pooled.reshape(count, channels, grid * grid).transpose(0, 2, 1))


def gem(features: Array, power: float = GEM_POWER) -> FloatArray:
    """Generalised-mean pooling of (N, C, H, W) non-negative maps -> (N, C) float32."""
    return np.asarray(np.power(power_means(features, 1, power)[:, 0], 1.0 / power), np.float32)


class CopyModel(ImageModel):
    """Copy-detection descriptors: edited copies of one photo (overlays, crops, screenshots,
    flips, quarter turns, colour, blur, JPEG) stay close; different photos of one scene do not.
    `pooled` gives the unwhitened descriptors that `bench/quality/fit_copy.py` fits on."""

    id = "dupify-copy-1"
    version = "1"
    dimensions = CHANNELS
    created = 1_795_996_800  # 2026-12-01T00:00:00Z; fixed for version "1", never bumped in place
    input_shape = (INPUT_SIDE, INPUT_SIDE, 3)
    working_side = INPUT_SIDE

    def __init__(
        self,
        policy: SessionPolicy,
        model_path: Path | None = None,
        whiten: tuple[FloatArray, FloatArray] | None = None,
    ) -> None:
        self._model_path = model_path
        self._mean, self._projection = whiten if whiten is not None else whitening()
        if self._projection.shape[1] != self.dimensions:
            raise AssetError(f"{self.id}: a whitening of {self._projection.shape[1]} dimensions")
        self.region_space = RegionSpace(GEM_POWER, self._mean, self._projection)
        super().__init__(policy)

    def load(self) -> bytes:
        graph, self._input = stage3_graph(OPEN_NSFW.read(self._model_path))
        return graph

    def preprocess(self, pixels: Pixels) -> FloatArray:
        return preprocess(pixels)

    def preprocess_into(self, pixels: Pixels, out: FloatArray) -> None:
        preprocess_into(pixels, out)

    def features(self, batch: FloatArray) -> FloatArray:
        """(N, 256, 256, 3) preprocessed tensors -> (N, 512, 16, 16) stage-3 feature maps."""
        batch = checked_batch(batch, self.input_shape)
        if len(batch) == 0:
            return np.zeros((0, CHANNELS, INPUT_SIDE // 16, INPUT_SIDE // 16), dtype=np.float32)
        (features,) = self.session.run([STAGE3_TENSOR], {self._input: batch})
        if features.ndim != 4 or features.shape[:2] != (len(batch), CHANNELS):
            raise AssetError(f"{self.id}: stage-3 features of shape {features.shape}")
        return np.asarray(features, dtype=np.float32)

    def pooled(self, batch: FloatArray) -> FloatArray:
        """(N, 256, 256, 3) preprocessed tensors -> (N, 512) unit GeM descriptors, unwhitened."""
        return unit_rows(gem(self.features(batch)))

    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        """(N, 256, 256, 3) preprocessed tensors -> (N, 512) unit copy descriptors, and the
        (N, 64, 512) cell descriptors of `REGIONS`."""
        means = power_means(self.features(batch), GRID)
        pooled = unit_rows(np.power(means.mean(axis=1), 1.0 / GEM_POWER))
        return {
            EMBEDDING: unit_rows((pooled - self._mean) @ self._projection),
            REGIONS: np.power(means, 1.0 / GEM_POWER).astype(np.float32),
        }
