"""Test helper: small CLIP-shaped and DINO-shaped ONNX exports (a few KB each) and a small
`tokenizer.json`, built in the test run with the `onnx` and `tokenizers` packages, laid out
the way Optimum and OpenCLIP exports are, and the models file that declares them.

The CLIP-shaped pair is built so that answers are known: the image tower is a linear map of
the image's 2x2 average-pooled, normalised pixels, and the text tower sums token embeddings,
with the template words ("a", "photo", "of", ".") at zero and each colour word's row equal to
the image tower's output for a solid image of that colour. So the text "red" and a solid red
image have the same vector, and "a photo of a red." too.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

SIDE = 16
DIMENSIONS = 8
MAX_LENGTH = 12
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255,) * 3}
TEMPLATE_WORDS = ("a", "photo", "of", ".")
OTHER_WORDS = ("cat", "dog", "car", "tree", "house", "boat")
VOCAB = ["[PAD]", "[UNK]", *TEMPLATE_WORDS, *COLOURS, *OTHER_WORDS]


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def image_weights(dimensions: int = DIMENSIONS) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((12, dimensions)).astype(np.float32)


def solid_embedding(rgb: tuple[int, int, int], dimensions: int = DIMENSIONS) -> np.ndarray:
    """What the image tower gives a solid image of `rgb` (before unit length)."""
    channels = (np.asarray(rgb, np.float32) / 255 - np.asarray(MEAN, np.float32)) / np.asarray(
        STD, np.float32
    )
    pooled = np.repeat(channels, 4)  # (3, 2, 2) flattened channel by channel
    return np.asarray(pooled @ image_weights(dimensions), dtype=np.float32)


def token_table(dimensions: int = DIMENSIONS) -> np.ndarray:
    rng = np.random.default_rng(12)
    table = rng.standard_normal((len(VOCAB), dimensions)).astype(np.float32)
    for word in ("[PAD]", *TEMPLATE_WORDS):
        table[VOCAB.index(word)] = 0
    for word, rgb in COLOURS.items():
        table[VOCAB.index(word)] = solid_embedding(rgb, dimensions)
    return table


def _image_nodes(
    dimensions: int, pixels: str = "pixel_values", output: str = "image_embeds"
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [
        helper.make_node(
            "AveragePool",
            [pixels],
            ["pooled"],
            kernel_shape=[SIDE // 2] * 2,
            strides=[SIDE // 2] * 2,
        ),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_image"], [output]),
    ]
    weights = [
        numpy_helper.from_array(np.array([-1, 12], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(image_weights(dimensions), "w_image"),
    ]
    return nodes, weights


def _text_nodes(
    dimensions: int, mask: bool = True, output: str = "text_embeds"
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [helper.make_node("Gather", ["token_table", "input_ids"], ["tokens"])]
    summed = "tokens"
    if mask:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axis_two"], ["mask_3d"]),
            helper.make_node("Mul", ["tokens", "mask_3d"], ["masked"]),
        ]
        summed = "masked"
    nodes.append(helper.make_node("ReduceSum", [summed, "axis_one"], [output], keepdims=0))
    weights = [
        numpy_helper.from_array(token_table(dimensions), "token_table"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_one"),
    ]
    return nodes, weights


def _pixels(name: str = "pixel_values") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, SIDE, SIDE])


def _ids(name: str, int32: bool = False) -> onnx.ValueInfoProto:
    kind = TensorProto.INT32 if int32 else TensorProto.INT64
    return helper.make_tensor_value_info(name, kind, ["N", "L"])


def _out(name: str, *shape: str | int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def vision_model(
    dimensions: int = DIMENSIONS, pixels: str = "pixel_values", output: str = "image_embeds"
) -> bytes:
    nodes, weights = _image_nodes(dimensions, pixels, output)
    graph = helper.make_graph(
        nodes, "vision", [_pixels(pixels)], [_out(output, "N", dimensions)], weights
    )
    return _model(graph)


def text_model(
    dimensions: int = DIMENSIONS,
    mask: bool = True,
    output: str = "text_embeds",
    int32: bool = False,
) -> bytes:
    """The text tower; `int32`: ids and mask as int32, as some exports take them."""
    nodes, weights = _text_nodes(dimensions, mask, output)
    inputs = [_ids("input_ids", int32), *([_ids("attention_mask", int32)] if mask else [])]
    graph = helper.make_graph(nodes, "text", inputs, [_out(output, "N", dimensions)], weights)
    return _model(graph)


def combined_model(dimensions: int = DIMENSIONS) -> bytes:
    """Optimum's one-file layout: both towers and `logits_per_image` in one graph."""
    image_nodes, image_weights_ = _image_nodes(dimensions)
    text_nodes, text_weights = _text_nodes(dimensions)
    nodes = [
        *image_nodes,
        *text_nodes,
        helper.make_node("Transpose", ["text_embeds"], ["text_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["image_embeds", "text_t"], ["logits_per_image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clip",
        [_ids("input_ids"), _pixels(), _ids("attention_mask")],
        [
            _out("logits_per_image", "N", "M"),
            _out("text_embeds", "M", dimensions),
            _out("image_embeds", "N", dimensions),
        ],
        image_weights_ + text_weights,
    )
    return _model(graph)


def dino_model(dimensions: int = 6, patch: int = 4) -> bytes:
    """DINOv2's Optimum outputs: `last_hidden_state` (N, tokens, D) and `pooler_output`."""
    rng = np.random.default_rng(13)
    kernel = rng.standard_normal((dimensions, 3, patch, patch)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["pixel_values", "patch_kernel"], ["patches"], strides=[patch] * 2
        ),
        helper.make_node("Reshape", ["patches", "token_shape"], ["channels_first"]),
        helper.make_node("Transpose", ["channels_first"], ["last_hidden_state"], perm=[0, 2, 1]),
        helper.make_node(
            "ReduceMean", ["last_hidden_state"], ["pooler_output"], axes=[1], keepdims=0
        ),
    ]
    weights = [
        numpy_helper.from_array(kernel, "patch_kernel"),
        numpy_helper.from_array(np.array([0, dimensions, -1], dtype=np.int64), "token_shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "dino",
        [_pixels()],
        [_out("last_hidden_state", "N", "T", dimensions), _out("pooler_output", "N", dimensions)],
        weights,
    )
    return _model(graph)


def tokenizer_json(truncate: int | None = None) -> str:
    """A word-level tokenizer of `VOCAB`, lower-casing; `truncate` sets its own max length."""
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, "[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if truncate is not None:
        tokenizer.enable_truncation(max_length=truncate)
    return str(tokenizer.to_str())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def solid_png(rgb: tuple[int, int, int], side: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Exports:
    """Where the built exports lie, and the models file that declares them."""

    folder: Path
    models_file: Path


CLIP_DECLARATION = """
[[models]]
id = "{id}"
version = "1"
task = "clip"
image_model = "{folder}/vision_model.onnx"
text_model = "{folder}/text_model.onnx"
tokenizer = "{folder}/tokenizer.json"
dimensions = {dimensions}
[models.sha256]
image_model = "{image_sha}"
[models.preprocess]
size = {side}
resize = "shortest"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[models.text]
max_length = {max_length}
[models.zero_shot]
labels = ["red", "green", "blue", "cat", "dog"]
"""

DINO_DECLARATION = """
[[models]]
id = "tiny-dino"
version = "1"
task = "image"
image_model = "{folder}/dino/model.onnx"
output = "last_hidden_state"
pooling = "mean"
dimensions = 6
[models.preprocess]
size = {side}
resize_side = {resize_side}
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
"""


def write_exports(folder: Path, *, default_labels: bool = True) -> Exports:
    """Optimum's two-file CLIP layout (`tiny-clip`), its one-file layout (`tiny-clip-one`,
    under one/), a DINO-shaped image model (`tiny-dino`, under dino/) and their models file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vision_model.onnx").write_bytes(vision_model())
    (folder / "text_model.onnx").write_bytes(text_model())
    (folder / "tokenizer.json").write_text(tokenizer_json(), encoding="utf-8")
    (folder / "one").mkdir(exist_ok=True)
    (folder / "one" / "model.onnx").write_bytes(combined_model())
    (folder / "one" / "tokenizer.json").write_text(tokenizer_json(), encoding="utf-8")
    (folder / "dino").mkdir(exist_ok=True)
    (folder / "dino" / "model.onnx").write_bytes(dino_model())
    header = 'default_labels_model = "tiny-clip"\n' if default_labels else ""
    text = header + CLIP_DECLARATION.format(
        id="tiny-clip",
        folder=folder,
        dimensions=DIMENSIONS,
        image_sha=sha256(folder / "vision_model.onnx"),
        side=SIDE,
        max_length=MAX_LENGTH,
    )
    text += f"""
[[models]]
id = "tiny-clip-one"
version = "1"
task = "clip"
model = "one/model.onnx"
tokenizer = "one/tokenizer.json"
dimensions = {DIMENSIONS}
[models.preprocess]
size = {SIDE}
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[models.text]
max_length = {MAX_LENGTH}
padding = "longest"
"""
    text += DINO_DECLARATION.format(folder=folder, side=SIDE, resize_side=SIDE + 4)
    models_file = folder / "models.toml"
    models_file.write_text(text, encoding="utf-8")
    return Exports(folder, models_file)
