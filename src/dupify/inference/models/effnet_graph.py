"""Builds EfficientNet-Lite0 as an ONNX graph from NumPy weights; caches it on disk by checksum."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from dupify.inference.assets import AssetError
from dupify.inference.models.effnet_weights import WEIGHTS, load_legacy_state_dict

log = logging.getLogger("dupify.inference.effnet")

# Bump whenever the graph this module emits changes in any way: it names the cache file, so a
# new builder never reuses a graph an older one wrote.
BUILDER_VERSION = 1
OPSET = 13
IR_VERSION = 8  # the IR that opset 13 shipped with; keeps the file loadable by older runtimes

INPUT_SIDE = 224
INPUT_NAME = "pixels"
EMBEDDING_OUTPUT = "embedding"
PROBABILITIES_OUTPUT = "probabilities"
EMBEDDING_DIMS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3  # TensorFlow's BatchNorm default, which these weights were trained with


@dataclass(frozen=True)
class Stage:
    """One row of EfficientNet-Lite0's block table (width and depth multipliers are 1.0)."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# The B0 table without squeeze-excite; Lite0 uses ReLU6 everywhere and the same widths.
STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32


def same_pads(side: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME" padding for one spatial axis: (pad before, pad after, output side).

    The odd pixel goes after (bottom/right), unlike a symmetric PyTorch pad; getting this wrong
    shifts every stride-2 layer by half a pixel and visibly degrades the labels.
    """
    out = math.ceil(side / stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    """Accumulates nodes and initializers with deterministic names."""

    def __init__(self, weights: Mapping[str, npt.NDArray[Any]]) -> None:
        self.weights = weights
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.side = INPUT_SIDE

    def weight(self, name: str) -> npt.NDArray[np.float64]:
        array = self.weights.get(name)
        if array is None:
            raise AssetError(f"the state dict has no tensor {name!r}")
        self.used.add(name)
        return np.asarray(array, dtype=np.float64)

    def constant(self, name: str, value: npt.NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def conv_bn(
        self,
        source: str,
        conv: str,
        bn: str,
        *,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Conv (no bias) + BatchNorm folded into one Conv with bias, then optional ReLU6."""
        kernel = self.weight(f"{conv}.weight")
        gamma = self.weight(f"{bn}.weight")
        beta = self.weight(f"{bn}.bias")
        mean = self.weight(f"{bn}.running_mean")
        var = self.weight(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")  # a training counter; nothing to fold
        if kernel.shape[0] != gamma.shape[0]:
            raise AssetError(f"{conv} has {kernel.shape[0]} filters, {bn} {gamma.shape[0]}")
        # Folded in float64 and rounded once, so the result is the same on every machine.
        scale = gamma / np.sqrt(var + BN_EPSILON)
        folded_kernel = (kernel * scale[:, None, None, None]).astype(np.float32)
        folded_bias = (beta - mean * scale).astype(np.float32)
        size = kernel.shape[-1]
        begin, end, out_side = same_pads(self.side, size, stride)
        prefix = conv.replace(".", "/").strip("_")
        output = f"{prefix}/conv"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [
                    source,
                    self.constant(f"{prefix}/kernel", folded_kernel),
                    self.constant(f"{prefix}/bias", folded_bias),
                ],
                [output],
                name=f"{prefix}/Conv",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                group=groups,
            )
        )
        self.side = out_side
        return self.relu6(output, prefix) if relu6 else output

    def relu6(self, source: str, prefix: str) -> str:
        low = self.constant(f"{prefix}/relu6_min", np.array(0.0, dtype=np.float32))
        high = self.constant(f"{prefix}/relu6_max", np.array(6.0, dtype=np.float32))
        output = f"{prefix}/relu6"
        self.nodes.append(helper.make_node("Clip", [source, low, high], [output], name=output))
        return output

    def block(self, source: str, index: int, stage: Stage, first: bool) -> str:
        """MBConv without squeeze-excite: expand 1x1, depthwise kxk, project 1x1, residual."""
        stride = stage.stride if first else 1
        in_channels = stage.in_channels if first else stage.out_channels
        prefix = f"_blocks.{index}"
        hidden = source
        if stage.expand_ratio != 1:
            hidden = self.conv_bn(hidden, f"{prefix}._expand_conv", f"{prefix}._bn0")
        depthwise_channels = in_channels * stage.expand_ratio
        kernel = self.weights.get(f"{prefix}._depthwise_conv.weight")
        if kernel is None or kernel.shape != (depthwise_channels, 1, stage.kernel, stage.kernel):
            raise AssetError(f"block {index}: depthwise kernel does not match the table")
        hidden = self.conv_bn(
            hidden,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            stride=stride,
            groups=depthwise_channels,
        )
        hidden = self.conv_bn(hidden, f"{prefix}._project_conv", f"{prefix}._bn2", relu6=False)
        if stride == 1 and in_channels == stage.out_channels:
            output = f"blocks/{index}/residual"
            self.nodes.append(helper.make_node("Add", [hidden, source], [output], name=output))
            return output
        return hidden


def build_effnet_lite0(weights: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """The serialised ONNX model: NCHW (N, 3, 224, 224) -> embedding (N, 1280), probabilities.

    Deterministic: the same weights give byte-identical output (names, order, no timestamps).
    """
    builder = _GraphBuilder(weights)
    hidden = builder.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", stride=2)
    index = 0
    for stage in STAGES:
        for repeat in range(stage.repeats):
            hidden = builder.block(hidden, index, stage, first=repeat == 0)
            index += 1
    hidden = builder.conv_bn(hidden, "_conv_head", "_bn1")
    builder.nodes.append(helper.make_node("GlobalAveragePool", [hidden], ["head/pool"]))
    builder.nodes.append(
        helper.make_node("Flatten", ["head/pool"], [EMBEDDING_OUTPUT], name="head/flatten", axis=1)
    )
    fc_weight = builder.weight("_fc.weight").astype(np.float32)
    fc_bias = builder.weight("_fc.bias").astype(np.float32)
    if fc_weight.shape != (NUM_CLASSES, EMBEDDING_DIMS):
        raise AssetError(f"classifier weight has shape {fc_weight.shape}")
    builder.nodes.append(
        helper.make_node(
            "Gemm",
            [
                EMBEDDING_OUTPUT,
                builder.constant("fc/weight", fc_weight),
                builder.constant("fc/bias", fc_bias),
            ],
            ["logits"],
            name="fc/Gemm",
            transB=1,
        )
    )
    builder.nodes.append(
        helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], name="fc/softmax", axis=1)
    )
    unused = set(weights) - builder.used
    if unused:
        raise AssetError(f"weights not used by the graph: {sorted(unused)[:5]}")

    graph = helper.make_graph(
        builder.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, 224, 224])],
        [
            helper.make_tensor_value_info(
                EMBEDDING_OUTPUT, TensorProto.FLOAT, ["N", EMBEDDING_DIMS]
            ),
            helper.make_tensor_value_info(
                PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["N", NUM_CLASSES]
            ),
        ],
        builder.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="dupify",
        producer_version=str(BUILDER_VERSION),
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    serialised: bytes = model.SerializeToString()
    return serialised


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dupify`, else `~/.cache/dupify` (the per-user cache convention)."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "dupify"


def cache_path(cache_dir: Path, weights_sha256: str) -> Path:
    """The built graph's file: the source weights' digest and the builder version name it."""
    return cache_dir / "models" / f"effnet-lite0-{weights_sha256[:16]}-b{BUILDER_VERSION}.onnx"


def _read_cached(path: Path) -> bytes | None:
    """The cached graph if it and its sidecar checksum agree; None if missing or corrupt."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        data = path.read_bytes()
        expected = sidecar.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        log.warning("cached model %s does not match its checksum; rebuilding it", path)
        return None
    return data


def _write_atomically(path: Path, data: bytes) -> None:
    # A temp file in the same folder then a rename: a reader never sees half a file, and two
    # processes building at once both write the same bytes (the build is deterministic).
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _write_cache(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        sidecar = path.with_name(path.name + ".sha256")
        _write_atomically(sidecar, (hashlib.sha256(data).hexdigest() + "\n").encode("ascii"))
    except OSError as exc:
        # A read-only home (e.g. a locked-down container) must not stop the server: the graph
        # is rebuilt in memory at each start instead, which costs about a second.
        log.warning("cannot cache the built model at %s (%s); using it from memory", path, exc)


def load_or_build(
    cache_dir: Path | None = None, weights_path: Path | None = None
) -> tuple[bytes, str]:
    """The EfficientNet-Lite0 ONNX graph, from the cache or freshly built (then cached).

    Returns (serialised model, path of the cache file). The weights are read and checked against
    their pinned sha256 only when the cache misses.
    """
    path = cache_path(cache_dir if cache_dir is not None else default_cache_dir(), WEIGHTS.sha256)
    cached = _read_cached(path)
    if cached is not None:
        return cached, str(path)
    source = weights_path if weights_path is not None else WEIGHTS.locate()
    weights = load_legacy_state_dict(WEIGHTS.read(source))
    data = build_effnet_lite0(weights)
    _write_cache(path, data)
    log.info("built EfficientNet-Lite0 graph from %s into %s", source, path)
    return data, str(path)
