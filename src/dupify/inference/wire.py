"""The remote inference job payload, both directions: a batch of preprocessed tensors in, every
model output back, as base64 of little-endian float32; decoding validates strictly.

What crosses the wire is the model's input tensor, already decoded and preprocessed on the API
tier (measured in bench/wire_sizes.py, docs/deployment.md): the worker runs `predict` and nothing
else, so vectors are the in-process ones bit for bit and no image decoder runs on the GPU box.
A float32 tensor made from 8-bit pixels compresses well once its bytes are grouped by position
in the float ("shuffle": all first bytes, then all second bytes, ...) and deflated: 140 to 165 KB
of base64 an image instead of 784 KB raw, lossless, in about 4 ms (bench/wire_sizes.py).
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
WIRE_VERSION = 1
RAW = "f32"  # the tensor's little-endian float32 bytes
SHUFFLED = "f32-shuffle-deflate"  # byte planes of the float32s, deflated (zlib level 1)
CODECS = (RAW, SHUFFLED)
JOB_KEYS = {"v", "model", "count", "shape", "dtype", "codec", "data"}
# Image tensors are float32; a text tower's token rows (ids, then the attention mask) int64.
DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}
MAX_TOKEN_ID = 1 << 31  # token ids and masks are small non-negative integers
OUTPUT_KEYS = {"v", "model", "count", "outputs"}
MAX_OUTPUTS = 16  # named outputs one model may answer
MAX_OUTPUT_VALUES = 1 << 20  # values in one output's row; no model here comes near


class WireError(ValueError):
    """A payload that is not what the protocol allows; the message says what and where."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, limit: int) -> bytes:
    if not isinstance(text, str):
        raise WireError(f"{what} must be a base64 string")
    if len(text) > limit * 4 // 3 + 4:
        raise WireError(f"{what} is larger than {limit} bytes")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise WireError(f"{what} is not valid base64") from exc


def _shuffle(array: Array) -> bytes:
    size = array.dtype.itemsize
    planes = np.ascontiguousarray(array).view(np.uint8).reshape(-1, size)
    return zlib.compress(np.ascontiguousarray(planes.T).tobytes(), 1)


def _unshuffle(data: bytes, values: int, dtype: np.dtype[Any]) -> Array:
    size = dtype.itemsize
    inflater = zlib.decompressobj()
    try:
        # Bounded: a deflate bomb stops at the size the shape allows.
        raw = inflater.decompress(data, values * size + 1)
    except zlib.error as exc:
        raise WireError(f"data is not valid deflate data: {exc}") from exc
    if len(raw) != values * size or not inflater.eof or inflater.unused_data:
        raise WireError(f"data does not hold exactly {values} {dtype.name} values")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(size, values)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(values)


def encode_job(model_id: str, tensors: Sequence[Array], codec: str = SHUFFLED) -> dict[str, Any]:
    """One job's `input`: the tensors (each one row of the model's batch), stacked; float32,
    or int64 for integer rows (a text tower's tokens)."""
    if not tensors:
        raise ValueError("a job needs at least one tensor")
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    integer = all(np.issubdtype(np.asarray(t).dtype, np.integer) for t in tensors)
    dtype = "int64" if integer else "float32"
    batch = np.stack([np.asarray(t, dtype=DTYPES[dtype]) for t in tensors])
    data = _shuffle(batch) if codec == SHUFFLED else batch.tobytes()
    return {
        "v": WIRE_VERSION,
        "model": model_id,
        "count": len(tensors),
        "shape": list(batch.shape[1:]),
        "dtype": dtype,
        "codec": codec,
        "data": _b64(data),
    }


def decode_job(
    payload: object, spec: Callable[[str], tuple[tuple[int, ...], str] | None], max_items: int
) -> tuple[str, Array]:
    """A job's model id and its (N, *shape) batch of the model's dtype, or WireError.

    `spec(model_id)` is the served model's (shape, dtype) of one row, None for a model (or
    text tower) not served.
    """
    if not isinstance(payload, dict):
        raise WireError("input must be a JSON object")
    keys = set(payload)
    if keys != JOB_KEYS:
        missing, extra = sorted(JOB_KEYS - keys), sorted(keys - JOB_KEYS)
        raise WireError(f"input fields wrong: missing {missing}, unexpected {extra}")
    if payload["v"] != WIRE_VERSION:
        raise WireError(f"unsupported payload version {payload['v']!r}; this worker speaks 1")
    model_id = payload["model"]
    if not isinstance(model_id, str) or len(model_id) > 200:
        raise WireError("model must be a model id string")
    served = spec(model_id)
    if served is None:
        raise WireError(f"unknown model {model_id!r}: this worker does not serve it")
    shape, dtype_name = served
    count = payload["count"]
    if type(count) is not int or not 1 <= count <= max_items:
        raise WireError(f"count must be an integer from 1 to {max_items}")
    if payload["shape"] != list(shape):
        raise WireError(f"shape must be {list(shape)} for {model_id}, got {payload['shape']!r}")
    if payload["dtype"] != dtype_name:
        raise WireError(f"dtype must be {dtype_name} for {model_id}, got {payload['dtype']!r}")
    dtype = DTYPES[dtype_name]
    values = count * math.prod(shape)
    if payload["codec"] == RAW:
        raw = _unb64(payload["data"], "data", values * dtype.itemsize)
        if len(raw) != values * dtype.itemsize:
            raise WireError(f"data holds {len(raw)} bytes, expected {values * dtype.itemsize}")
        flat = np.frombuffer(raw, dtype=dtype)
    elif payload["codec"] == SHUFFLED:
        data = _unb64(payload["data"], "data", values * dtype.itemsize + 1024)
        flat = _unshuffle(data, values, dtype)
    else:
        raise WireError(f"codec must be one of {', '.join(CODECS)}")
    batch = flat.astype(np.float32 if dtype.kind == "f" else np.int64).reshape(count, *shape)
    if dtype.kind == "f" and not np.isfinite(batch).all():
        raise WireError("data holds NaN or infinite values")
    if dtype.kind == "i" and batch.size and (batch.min() < 0 or batch.max() >= MAX_TOKEN_ID):
        raise WireError("token rows must hold non-negative ids below 2**31")
    return model_id, batch


def encode_outputs(model_id: str, outputs: Mapping[str, Array], count: int) -> dict[str, Any]:
    """A job's `output`: every output `predict` gave, base64 float32, with its shape."""
    encoded: dict[str, Any] = {}
    for name, value in outputs.items():
        array = np.asarray(value, dtype="<f4")
        if array.shape[:1] != (count,):
            raise ValueError(f"output {name!r} has {array.shape[:1]} rows, expected {count}")
        encoded[name] = {"shape": list(array.shape), "data": _b64(array.tobytes())}
    return {"v": WIRE_VERSION, "model": model_id, "count": count, "outputs": encoded}


def decode_outputs(payload: object, model_id: str, count: int) -> list[dict[str, Array]]:
    """A job's output as one row dict per item, in order, or WireError."""
    if not isinstance(payload, dict) or set(payload) != OUTPUT_KEYS:
        raise WireError(f"output must be an object with fields {sorted(OUTPUT_KEYS)}")
    if payload["v"] != WIRE_VERSION or payload["model"] != model_id or payload["count"] != count:
        raise WireError(f"output is not for {count} items of {model_id}")
    outputs = payload["outputs"]
    if not isinstance(outputs, dict) or not 1 <= len(outputs) <= MAX_OUTPUTS:
        raise WireError("outputs must be an object of 1 to 16 named arrays")
    arrays: dict[str, Array] = {}
    for name, item in outputs.items():
        if not isinstance(item, dict) or set(item) != {"shape", "data"}:
            raise WireError(f"output {name!r} must be an object with shape and data")
        shape = item["shape"]
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 4
            or not all(type(side) is int and side >= 0 for side in shape)
            or shape[0] != count
            or math.prod(shape[1:]) > MAX_OUTPUT_VALUES
        ):
            raise WireError(f"output {name!r} has a bad shape {shape!r}")
        raw = _unb64(item["data"], f"output {name!r}", math.prod(shape) * 4)
        if len(raw) != math.prod(shape) * 4:
            raise WireError(f"output {name!r} does not hold {math.prod(shape)} float32 values")
        arrays[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    # Copies per row, like the local batcher: a kept row does not pin the whole job's array.
    return [{name: array[i].copy() for name, array in arrays.items()} for i in range(count)]
