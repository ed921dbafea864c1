"""What `/v1/analyze` can be asked for, and which models and versions a set of features needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dupify.inference.models.faces import MODEL_VERSION as FACES_VERSION
from dupify.inference.models.faces import WORKING_SIDE as FACES_WORKING_SIDE
from dupify.inference.models.text import MODEL_VERSION as TEXT_VERSION
from dupify.inference.models.text import WORKING_SIDE as TEXT_WORKING_SIDE
from dupify.inference.registry import LABELS_ROLE, SAFETY_ROLE, ModelRegistry

FEATURES = (
    "labels",
    "safety",
    "colors",
    "hashes",
    "quality",
    "metadata",
    "text",
    "faces",
    "embedding",
)
# Cheap enough to run on every request; text, faces and embedding are opt-in (cost or size).
DEFAULT_FEATURES = frozenset({"labels", "safety", "colors", "hashes", "quality", "metadata"})
# The features a model head answers, each from the model in the role of the same name.
HEAD_FEATURES = (LABELS_ROLE, SAFETY_ROLE)

# Shorter side kept for OCR and face detection: small print and small faces need pixels that
# the 256-px model input would throw away (both components work at this size; see their modules).
DETAIL_WORKING_SIDE = max(TEXT_WORKING_SIDE, FACES_WORKING_SIDE)


@dataclass(frozen=True)
class AnalysisOptions:
    features: frozenset[str]
    embedding_model: str
    top_k: int = 5
    max_colors: int = 5
    # Zero-shot labels: a model with a text tower scores `labels` against these names, whose
    # unit vectors (one row per name, in its space) the route computed; None: the labels head.
    labels_model: str | None = None
    label_names: tuple[str, ...] = ()
    label_vectors: npt.NDArray[np.float32] | None = field(default=None, compare=False)


def models_for(registry: ModelRegistry, options: AnalysisOptions) -> list[str]:
    """The model ids the features need, each once; an unknown one fails the whole request."""
    needed: list[str] = []
    for feature in (SAFETY_ROLE, LABELS_ROLE):
        if feature in options.features:
            if feature == LABELS_ROLE and options.labels_model is not None:
                model_id = registry.get(options.labels_model).id
            else:
                model_id = registry.for_role(feature).id
            if model_id not in needed:
                needed.append(model_id)
    if "embedding" in options.features and options.embedding_model not in needed:
        needed.append(registry.get(options.embedding_model).id)
    return needed


def model_versions(registry: ModelRegistry, options: AnalysisOptions) -> dict[str, str]:
    """The `models` map of a response: which model version produced which feature."""
    versions: dict[str, str] = {}
    for feature in HEAD_FEATURES:
        if feature in options.features:
            if feature == LABELS_ROLE and options.labels_model is not None:
                model = registry.get(options.labels_model)
                versions[feature] = f"{model.id}@{model.version}"
            else:
                versions[feature] = registry.for_role(feature).heads[feature].version
    if "text" in options.features:
        versions["text"] = TEXT_VERSION
    if "faces" in options.features:
        versions["faces"] = FACES_VERSION
    if "embedding" in options.features:
        versions["embedding"] = options.embedding_model
    return versions
