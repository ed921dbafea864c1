"""Test helper: the small exports of `support.onnx_builders` loaded by the real models-file
loader into a registry and a running `LocalBackend`, for apps that serve them (`api_factory`
with `registry=` and `backend=`), and the requests the CLIP tests send."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from dupify.config import InferenceSettings
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import EMBEDDING_ROLE, ModelRegistry
from support.api import Api
from support.onnx_builders import COLOURS, solid_png, write_exports

SETTINGS = InferenceSettings(intra_op_threads=1)


def clip_registry(folder: Path) -> ModelRegistry:
    """Only the declared models (no bundled ones), `tiny-clip` the default embedding model."""
    exports = write_exports(folder)
    return ModelRegistry(
        SETTINGS,
        models=[],
        models_file=exports.models_file,
        roles={EMBEDDING_ROLE: "tiny-clip"},
    )


async def running_backend(registry: ModelRegistry) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(registry, SETTINGS)
    await backend.start()
    yield backend
    await backend.stop()


def colour(name: str) -> str:
    """A solid image of a named colour, as bare base64."""
    return base64.b64encode(solid_png(COLOURS[name])).decode()


def vectors(body: dict[str, Any]) -> np.ndarray:
    return np.asarray([item["embedding"] for item in body["data"]], dtype=np.float32)


async def post(api: Api, key: str, path: str, payload: dict[str, Any]) -> Any:
    return await api.client.post(path, json=payload, headers={"Authorization": f"Bearer {key}"})
