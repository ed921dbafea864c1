"""Vector math on model outputs: rows scaled to unit length, and the top classes of a row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def unit_rows(matrix: npt.ArrayLike) -> FloatArray:
    """Each row scaled to length 1, as float32. An all-zero row stays zero rather than dividing
    by zero (pooled ReLU features can be all zero in principle: a blank input kills every unit)."""
    rows = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def top_labels(
    probabilities: npt.ArrayLike, names: Sequence[str], k: int = 5
) -> list[dict[str, Any]]:
    """The k most probable classes of one row, best first: [{"label", "score"}, ...]."""
    row = np.asarray(probabilities, dtype=np.float64)
    if row.shape != (len(names),):
        raise ValueError(f"expected one row of {len(names)} probabilities, got {row.shape}")
    if not 1 <= k <= len(names):
        raise ValueError(f"k must be within 1..{len(names)}, got {k}")
    # A stable sort keeps ties in class order, so equal inputs always give equal lists.
    best = np.argsort(-row, kind="stable")[:k]
    return [{"label": names[index], "score": round(float(row[index]), 4)} for index in best]
