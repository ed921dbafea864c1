"""The models a process serves: loading, lookup by id, listing, and which model plays each role."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from dupify.config import InferenceSettings, Settings
from dupify.errors import ApiError
from dupify.inference.catalog import ModelsFile, ModelsFileError, read_models_file
from dupify.inference.models.base import ImageModel
from dupify.inference.models.copy import CopyModel
from dupify.inference.models.onnx_export import load_declared_models
from dupify.inference.models.semantic import SemanticModel
from dupify.inference.models.visual import VisualModel
from dupify.inference.session import SessionPolicy

# What the pipeline asks the registry for, never a model id of its own:
EMBEDDING_ROLE = "embedding"  # embeds when a request names no model
LABELS_ROLE = "labels"  # its "labels" head answers the `labels` feature
SAFETY_ROLE = "safety"  # its "safety" head answers the `safety` feature
FINGERPRINT_ROLE = "fingerprint"  # embeds for compare, duplicates and `dupify dedupe`
# The bundled models in those roles. The duplicate thresholds (dupify.analysis.similarity) are
# calibrated on the fingerprint model's vectors: dupify-copy-1, the copy-detection descriptor.
DEFAULT_ROLES: Mapping[str, str] = {
    EMBEDDING_ROLE: VisualModel.id,
    LABELS_ROLE: SemanticModel.id,
    SAFETY_ROLE: VisualModel.id,
    FINGERPRINT_ROLE: CopyModel.id,
}


def _load_visual(policy: SessionPolicy, settings: InferenceSettings) -> ImageModel:
    return VisualModel(policy)


def _load_semantic(policy: SessionPolicy, settings: InferenceSettings) -> ImageModel:
    return SemanticModel(policy, cache_dir=settings.model_cache_dir)


def _load_copy(policy: SessionPolicy, settings: InferenceSettings) -> ImageModel:
    return CopyModel(policy)


# The bundled models by id, in /v1/models order. All load by default: dupify-copy-1 reuses
# open-nsfw's file (its first three stages only) plus a 1 MB whitening array.
BUNDLED_MODELS: dict[str, Callable[[SessionPolicy, InferenceSettings], ImageModel]] = {
    VisualModel.id: _load_visual,
    SemanticModel.id: _load_semantic,
    CopyModel.id: _load_copy,
}


def roles_for(settings: Settings) -> dict[str, str]:
    """The model in each role: the defaults, with the configured default model embedding."""
    return {**DEFAULT_ROLES, EMBEDDING_ROLE: settings.default_model}


def load_default_models(
    settings: InferenceSettings, only: Collection[str] | None = None
) -> list[ImageModel]:
    """The bundled models (or just those in `only`), each loaded once under the configured
    session policy."""
    wanted = list(BUNDLED_MODELS) if only is None else [m for m in BUNDLED_MODELS if m in only]
    unknown = set(only or ()) - BUNDLED_MODELS.keys()
    if unknown:
        raise ValueError(
            f"unknown model ids {sorted(unknown)}; bundled models: {', '.join(BUNDLED_MODELS)}"
        )
    policy = SessionPolicy.from_settings(settings)
    return [BUNDLED_MODELS[model_id](policy, settings) for model_id in wanted]


class ModelRegistry:
    """Owns the models for the process lifetime: lookup by id or by role, and the listing.

    Running them is the inference backend's job (dupify.inference.backend); the registry holds
    what the pipeline needs around that: preprocessing, dimensions, working sides and heads.
    """

    def __init__(
        self,
        settings: InferenceSettings,
        models: Sequence[ImageModel] | None = None,
        only: Collection[str] | None = None,
        roles: Mapping[str, str] | None = None,
        models_file: Path | None = None,
        catalog: ModelsFile | None = None,
    ) -> None:
        # `models` lets tests and the CLI share an already-loaded model instead of loading again;
        # `only` loads just the bundled models a job needs (e.g. the local batch tools); a role
        # whose model is not loaded answers `model_not_found` when asked for. The operator's
        # models (`models_file`, or an already-read `catalog`) load first: a bad declaration
        # stops start-up before the bundled models spend their load time.
        catalog = catalog if catalog is not None else read_models_file(models_file)
        declared = load_declared_models(catalog, SessionPolicy.from_settings(settings))
        loaded = list(models) if models is not None else load_default_models(settings, only)
        self._models: dict[str, ImageModel] = {}
        for model in loaded:
            if model.id in self._models:
                raise ValueError(f"model id {model.id!r} registered twice")
            self._models[model.id] = model
        for index, model in enumerate(declared):
            if model.id in self._models or model.id in BUNDLED_MODELS:
                raise ModelsFileError(
                    f"models[{index}].id: {model.id!r} is already a bundled model's id"
                )
            self._models[model.id] = model
        self.roles: dict[str, str] = {**DEFAULT_ROLES, **(roles or {})}
        # The clip model `/v1/analyze` scores `labels` with when a request names no
        # `labels_model` (the models file's `default_labels_model`); None: the labels head.
        self.default_labels_model: str | None = catalog.default_labels_model

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    @property
    def models(self) -> list[ImageModel]:
        return list(self._models.values())

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

    def for_role(self, role: str) -> ImageModel:
        """The model that plays `role` (one of DEFAULT_ROLES' keys)."""
        return self.get(self.roles[role])

    def text_model(self, model_id: str, param: str = "model") -> ImageModel:
        """The model `model_id`, which must embed text (400 `text_not_supported` otherwise);
        `param` names the field in either error."""
        if model_id not in self._models:
            raise ApiError(
                "model_not_found",
                f"The model {model_id!r} does not exist; available models: "
                f"{', '.join(sorted(self._models))}.",
                param=param,
            )
        model = self.get(model_id)
        if model.text_encoder is None:
            raise ApiError(
                "text_not_supported",
                f"{model_id} embeds images only; text needs a model whose modalities include "
                f"text (see /v1/models)",
                param=param,
            )
        return model

    def describe(self) -> list[dict[str, Any]]:
        """The `/v1/models` entries (OpenAI's list shape plus task, dimensions and version; the
        route adds `modalities`)."""
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
