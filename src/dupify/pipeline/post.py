"""The pipeline's post stage: `dimensions` on unit vectors, the model heads (labels, safety),
and each image's analysis or fingerprint assembled from its measures and model rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dupify.analysis.frames import Regions, RegionSpace
from dupify.analysis.safety import safety_verdict
from dupify.analysis.similarity import Fingerprint
from dupify.analysis.vectors import top_labels, unit_rows
from dupify.inference.batcher import Rows
from dupify.inference.models.base import EMBEDDING, REGIONS, Array, FloatArray
from dupify.inference.registry import LABELS_ROLE, SAFETY_ROLE, ModelRegistry
from dupify.pipeline.features import AnalysisOptions
from dupify.pipeline.pre import Inspection


def with_dimensions(vectors: FloatArray, dimensions: int | None) -> FloatArray:
    """Unit vectors cut to their first `dimensions` and scaled back to unit length."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    return unit_rows(vectors[:, :dimensions])


def fingerprint(
    inspection: Inspection, outputs: Mapping[str, Array], space: RegionSpace | None = None
) -> Fingerprint:
    """What compare and duplicates need of one image: its hashes, its embedding and, when the
    fingerprint model gives them (`space`), its cell descriptors for the shared-frame check."""
    hashes = inspection.measures["hashes"]
    regions = None
    if space is not None and REGIONS in outputs:
        regions = Regions(np.asarray(outputs[REGIONS], dtype=np.float16), space)
    return Fingerprint(
        sha256=hashes["sha256"],
        pixel_sha256=inspection.image.pixel_sha256,
        phash=hashes["phash"],
        dhash=hashes["dhash"],
        embedding=outputs[EMBEDDING],
        regions=regions,
    )


def analysis(
    inspection: Inspection,
    rows: Mapping[str, Rows],
    registry: ModelRegistry,
    options: AnalysisOptions,
    text: Any,
    faces: Any,
) -> dict[str, Any]:
    """One image's result in the documented field order, holding only the asked-for features."""
    features = options.features
    image = inspection.image
    result: dict[str, Any] = {}
    if "metadata" in features:
        result["metadata"] = {
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "mode": image.mode,
            "animated": image.animated,
            "exif_gps_present": image.exif_gps_present,
        }
    if LABELS_ROLE in features and options.labels_model is not None:
        result["labels"] = zero_shot_labels(rows, registry, options)
    elif LABELS_ROLE in features:
        model = registry.for_role(LABELS_ROLE)
        probabilities = rows[model.id][model.heads[LABELS_ROLE].output]
        # A labels model may know fewer classes than `top_k` asks for; it gives all it has.
        top_k = min(options.top_k, len(model.label_names))
        result["labels"] = top_labels(probabilities, model.label_names, top_k)
    if SAFETY_ROLE in features:
        model = registry.for_role(SAFETY_ROLE)
        result["safety"] = safety_verdict(float(rows[model.id][model.heads[SAFETY_ROLE].output]))
    for measure in ("colors", "hashes", "quality"):
        if measure in features:
            result[measure] = inspection.measures[measure]
    if "text" in features:
        result["text"] = text
    if "faces" in features:
        result["faces"] = faces
    if "embedding" in features:
        result["embedding"] = rows[options.embedding_model][EMBEDDING]
    return result


def zero_shot_labels(
    rows: Mapping[str, Rows], registry: ModelRegistry, options: AnalysisOptions
) -> list[dict[str, Any]]:
    """The labels of one image scored zero-shot: its embedding against each label's vector."""
    model = registry.get(str(options.labels_model))
    if model.zero_shot is None or options.label_vectors is None:
        raise ValueError(f"{model.id} cannot score labels zero-shot")
    scores = model.zero_shot.scores(rows[model.id][EMBEDDING], options.label_vectors)
    top_k = min(options.top_k, len(options.label_names))
    return top_labels(scores, options.label_names, top_k)
