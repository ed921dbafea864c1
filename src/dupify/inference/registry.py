"""The loaded models, one micro-batcher each: lookup, listing, warm-up and batched embedding."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.batcher import BatcherStats, MicroBatcher
from dupify.inference.models.base import EMBEDDING, Array, FloatArray, ImageModel
from dupify.inference.models.semantic import SemanticModel
from dupify.inference.models.visual import VisualModel


def _load_visual(settings: InferenceSettings) -> ImageModel:
    return VisualModel(device=settings.device, intra_op_threads=settings.intra_op_threads)


def _load_semantic(settings: InferenceSettings) -> ImageModel:
    return SemanticModel(
        device=settings.device,
        intra_op_threads=settings.intra_op_threads,
        cache_dir=settings.model_cache_dir,
    )


# The bundled models by id, in /v1/models order; the first is the default model.
BUNDLED_MODELS: dict[str, Callable[[InferenceSettings], ImageModel]] = {
    VisualModel.id: _load_visual,
    SemanticModel.id: _load_semantic,
}


def load_default_models(
    settings: InferenceSettings, only: Collection[str] | None = None
) -> list[ImageModel]:
    """The bundled models (or just those in `only`), each loaded once with the configured
    device and threads."""
    wanted = list(BUNDLED_MODELS) if only is None else [m for m in BUNDLED_MODELS if m in only]
    unknown = set(only or ()) - BUNDLED_MODELS.keys()
    if unknown:
        raise ValueError(
            f"unknown model ids {sorted(unknown)}; bundled models: {', '.join(BUNDLED_MODELS)}"
        )
    return [BUNDLED_MODELS[model_id](settings) for model_id in wanted]


class ModelRegistry:
    """Owns the models for the process lifetime; routes work through each model's batcher."""

    def __init__(
        self,
        settings: InferenceSettings,
        models: Sequence[ImageModel] | None = None,
        only: Collection[str] | None = None,
    ) -> None:
        # `models` lets tests and the CLI share an already-loaded model instead of loading again;
        # `only` loads just the bundled models a job needs (e.g. the local batch tools).
        loaded = list(models) if models is not None else load_default_models(settings, only)
        self._models: dict[str, ImageModel] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        for model in loaded:
            if model.id in self._models:
                raise ValueError(f"model id {model.id!r} registered twice")
            self._models[model.id] = model
            self._batchers[model.id] = MicroBatcher(
                model.predict,
                max_batch=settings.max_batch,
                max_wait_ms=settings.max_wait_ms,
                queue_size=settings.queue_size,
                retry_after_s=settings.overload_retry_after_s,
                name=model.id,
                item_shape=tuple(model.input_shape),
            )
        self.ready = False

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def get(self, model_id: str) -> ImageModel:
        model = self._models.get(model_id)
        if model is None:
            raise ApiError(
                "model_not_found",
                f"The model {model_id!r} does not exist; available models: "
                f"{', '.join(sorted(self._models))}.",
                param="model",
            )
        return model

    def batcher(self, model_id: str) -> MicroBatcher:
        self.get(model_id)
        return self._batchers[model_id]

    def describe(self) -> list[dict[str, Any]]:
        """The `/v1/models` entries (OpenAI's list shape plus task, dimensions and version)."""
        return [
            {
                "id": model.id,
                "object": "model",
                "created": model.created,
                "owned_by": "dupify",
                "task": model.task,
                "dimensions": model.dimensions,
                "version": model.version,
            }
            for model in self._models.values()
        ]

    def stats(self) -> dict[str, BatcherStats]:
        """Each model's batcher counters; `items` is how many images went through its `predict`
        (each image counted once, however many outputs a caller reads from that pass)."""
        return {model_id: batcher.stats() for model_id, batcher in self._batchers.items()}

    def images_predicted(self) -> dict[str, int]:
        """Images run through each model's `predict` so far (for "each model once per image")."""
        return {model_id: stats.items for model_id, stats in self.stats().items()}

    async def start(self) -> None:
        for batcher in self._batchers.values():
            await batcher.start()

    async def stop(self) -> None:
        """Drain every batcher: requests already accepted still get their answers."""
        self.ready = False
        for batcher in self._batchers.values():
            await batcher.stop()

    async def infer(self, model_id: str, tensors: Sequence[Array]) -> list[dict[str, Array]]:
        """Every output row (embedding, and e.g. nsfw) for each preprocessed tensor, in order."""
        return await self.batcher(model_id).submit_many(tensors)

    async def embed(self, model_id: str, tensors: Sequence[Array]) -> FloatArray:
        """(N, dimensions) float32 unit-norm embeddings of preprocessed tensors, in order."""
        model = self.get(model_id)
        rows = await self.infer(model_id, tensors)
        if not rows:
            return np.zeros((0, model.dimensions), dtype=np.float32)
        return np.stack([row[EMBEDDING] for row in rows]).astype(np.float32, copy=False)

    async def warm_up(self) -> None:
        """One real inference per model through its batcher (first-run allocations, /readyz)."""
        # A small gradient rather than zeros: exercises the normal path, not a degenerate input.
        ramp = np.linspace(0, 255, 32 * 32 * 3).astype(np.uint8).reshape(32, 32, 3)
        for model_id, model in self._models.items():
            embedding = await self.embed(model_id, [model.preprocess(ramp)])
            if embedding.shape != (1, model.dimensions) or not np.isfinite(embedding).all():
                raise RuntimeError(f"warm-up of {model_id} gave a bad embedding {embedding.shape}")
        self.ready = True
