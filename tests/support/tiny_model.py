"""Test helper: a tiny image model whose ONNX graph (about 10 KB) the suite builds itself, with
an embedding, a safety head and a labels head, for tests about the pipeline and the registry
rather than about a real model's numbers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from dupify.analysis.vectors import unit_rows
from dupify.inference.models.base import (
    EMBEDDING,
    Array,
    FloatArray,
    Head,
    ImageModel,
    checked_batch,
)

SIDE = 8
FEATURES = 3 * SIDE * SIDE
NSFW = "nsfw"
PROBABILITIES = "probabilities"


def tiny_graph(dimensions: int, classes: int) -> bytes:
    """pixels (N, 3, 8, 8) -> three linear maps of the flattened pixels: the embedding, a
    sigmoid (the safety probability) and a softmax over `classes` (the labels)."""
    rng = np.random.default_rng(20250101)

    def weights(name: str, columns: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            rng.standard_normal((FEATURES, columns)).astype(np.float32), name
        )

    shape = numpy_helper.from_array(np.array([-1, FEATURES], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["pixels", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_embedding"], [EMBEDDING]),
        helper.make_node("MatMul", ["flat", "w_nsfw"], ["nsfw_logit"]),
        helper.make_node("Sigmoid", ["nsfw_logit"], [NSFW]),
        helper.make_node("MatMul", ["flat", "w_labels"], ["label_logits"]),
        helper.make_node("Softmax", ["label_logits"], [PROBABILITIES], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [
            helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["N", dimensions]),
            helper.make_tensor_value_info(NSFW, TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", classes]),
        ],
        initializer=[
            shape,
            weights("w_embedding", dimensions),
            weights("w_nsfw", 1),
            weights("w_labels", classes),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


class TinyModel(ImageModel):
    """Any image -> an 8-d unit vector, P(unsafe) and four label probabilities."""

    id = "tiny-test-1"
    version = "1"
    dimensions = 8
    created = 0
    input_shape = (3, SIDE, SIDE)
    working_side = 32  # enough pixels for the hashes, which fingerprints also need
    heads = {
        "labels": Head(output=PROBABILITIES, version="tiny-labels@1"),
        "safety": Head(output=NSFW, version="tiny-safety@1"),
    }
    label_names = ("dark", "light", "reddish", "bluish")

    def load(self) -> bytes:
        return tiny_graph(self.dimensions, len(self.label_names))

    def preprocess(self, pixels: npt.NDArray[np.uint8]) -> FloatArray:
        small = Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        return np.ascontiguousarray(
            (np.asarray(small, dtype=np.float32) / 255.0).transpose(2, 0, 1)
        )

    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        batch = checked_batch(batch, self.input_shape)
        embedding, nsfw, probabilities = self.session.run(None, {"pixels": batch})
        return {
            EMBEDDING: unit_rows(embedding),
            NSFW: nsfw.reshape(len(batch)).astype(np.float32),
            PROBABILITIES: probabilities.astype(np.float32),
        }
