"""Zero-shot labels from a CLIP-like model: each label's prompts, the label's vector (its
prompts' mean), and how an image's cosines to the labels become scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dupify.analysis.vectors import unit_rows

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ZeroShotScoring:
    """An operator's zero-shot settings for one model (the models file's `[models.zero_shot]`)."""

    labels: tuple[str, ...]  # the default label set; empty: a request must bring its own
    templates: tuple[str, ...]  # each holds "{label}", e.g. "a photo of a {label}."
    scoring: str  # "softmax" over the label set (CLIP) or an independent "sigmoid" (SigLIP)
    logit_scale: float
    logit_bias: float

    def prompts(self, labels: Sequence[str]) -> list[str]:
        """Every label's prompts, label by label, template by template (replace, not `format`:
        a label or template may hold other braces)."""
        return [
            template.replace("{label}", label) for label in labels for template in self.templates
        ]

    def label_vectors(self, prompt_vectors: npt.ArrayLike, count: int) -> FloatArray:
        """(count * templates, D) unit prompt vectors -> (count, D): each label's prompts
        averaged and re-normalised (CLIP's prompt ensembling)."""
        vectors = np.asarray(prompt_vectors, dtype=np.float32)
        per_label = vectors.reshape(count, len(self.templates), vectors.shape[-1]).mean(axis=1)
        return unit_rows(per_label)

    def scores(self, image_vector: npt.ArrayLike, label_vectors: npt.ArrayLike) -> FloatArray:
        """One image's score for each label, in label order."""
        cosines = np.asarray(label_vectors, dtype=np.float64) @ np.asarray(
            image_vector, dtype=np.float64
        )
        logits = cosines * self.logit_scale + self.logit_bias
        if self.scoring == "sigmoid":
            return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float32)
        shifted = np.exp(logits - logits.max())
        return np.asarray(shifted / shifted.sum(), dtype=np.float32)
