"""Duplicate verdicts for two images and duplicate groups in a set (API section 5), tiered:

1. exact: the same bytes (sha256), or the same decoded pixels (`pixel_sha256`, when known);
2. perceptual hash: pHash and dHash both within a few bits (resized or recompressed copies),
   counted only when the embeddings agree at least as much as `similar` requires, because the
   hashes of near-uniform images carry almost no information and collide;
3. embedding: cosine similarity of the dupify-visual-1 embeddings, the main signal (it also
   catches crops, watermarks and flips, which change the hashes completely).

Verdicts: `exact_duplicate` (tier 1), `near_duplicate` (tier 2, or cosine >= near_duplicate),
`similar` (cosine >= similar: shares much of its content, e.g. the same scene reframed),
`different`.

The default thresholds were measured by `bench/calibrate_duplicates.py` on 18 real photos
(scikit-image's and scikit-learn's samples) and 7 altered copies of each, through the real
pipeline (decode_image at the model's working side, dupify-visual-1). The lowest cosine of a
copy to its photo was 0.855 (a large watermark on the motion-blurred `clock`; resized 50%
>= 0.944, crop 80% >= 0.896, JPEG q30 >= 0.881, flip >= 0.964); the highest cosine between
files of different photos was 0.724 (99th percentile 0.672, median 0.501). The near-duplicate
threshold 0.79 is the middle of that gap (margins +0.065 and +0.066); `similar` (0.70) lies
just above the 99th percentile of unrelated photos. Resized, recompressed and watermarked
copies were within 8 bits (pHash) and 5 bits (dHash) of their photo; different photos were
never closer than 16 and 15 bits, and never within 22 bits on both. See docs/api.md,
"Duplicate thresholds".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dupify.analysis.hashes import HASH_BITS, hamming
from dupify.analysis.vectors import unit_rows

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SIMILAR = "similar"
DIFFERENT = "different"

# Calibrated for dupify-visual-1 (numbers above; rerun bench/calibrate_duplicates.py to check).
NEAR_DUPLICATE_COSINE = 0.79
SIMILAR_COSINE = 0.70
PHASH_NEAR_DUPLICATE_BITS = 10
DHASH_NEAR_DUPLICATE_BITS = 10

# Rows of the similarity matrix computed at once in group_duplicates: bounds memory for the
# CLI's folder-sized sets (thousands of images) while the API's 64 images take one block.
_BLOCK_ROWS = 512

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Fingerprint:
    """What the duplicate logic needs of one image.

    `pixel_sha256` is "" when unknown (a large JPEG decoded through DCT scaling); `embedding`
    is the image's dupify-visual-1 vector (unit norm, as the model returns it).
    """

    sha256: str
    pixel_sha256: str
    phash: str
    dhash: str
    embedding: FloatArray = field(repr=False)


@dataclass(frozen=True)
class DuplicateThresholds:
    """Cosine similarities at or above which a pair is near-duplicate or similar, and the
    largest pHash and dHash distances (both must hold) of the hash tier."""

    near_duplicate: float = NEAR_DUPLICATE_COSINE
    similar: float = SIMILAR_COSINE
    phash_distance: int = PHASH_NEAR_DUPLICATE_BITS
    dhash_distance: int = DHASH_NEAR_DUPLICATE_BITS

    def __post_init__(self) -> None:
        if not -1.0 <= self.similar <= self.near_duplicate <= 1.0:
            raise ValueError(
                "thresholds must satisfy -1 <= similar <= near_duplicate <= 1, got "
                f"similar={self.similar}, near_duplicate={self.near_duplicate}"
            )
        for name in ("phash_distance", "dhash_distance"):
            if not 0 <= getattr(self, name) <= HASH_BITS:
                raise ValueError(f"{name} must be within 0..{HASH_BITS}")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "near_duplicate": self.near_duplicate,
            "similar": self.similar,
            "phash_distance": self.phash_distance,
            "dhash_distance": self.dhash_distance,
        }


DEFAULT_THRESHOLDS = DuplicateThresholds()


def cosine_similarity(a: FloatArray, b: FloatArray) -> float:
    """Cosine of two embeddings, within [-1, 1] (0 when either is all zeros)."""
    a64, b64 = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a64.shape != b64.shape:
        raise ValueError(f"embeddings differ in size: {a64.size} and {b64.size}")
    norms = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    if norms == 0.0:
        return 0.0
    return min(1.0, max(-1.0, float(a64 @ b64) / norms))


def _same_content(a: Fingerprint, b: Fingerprint) -> bool:
    return a.sha256 == b.sha256 or (a.pixel_sha256 != "" and a.pixel_sha256 == b.pixel_sha256)


def _pair_verdict(
    similarity: float, phash_distance: int, dhash_distance: int, t: DuplicateThresholds
) -> str:
    """The verdict of tiers 2 and 3 (tier 1, exact content, is checked before)."""
    hashes_match = phash_distance <= t.phash_distance and dhash_distance <= t.dhash_distance
    if similarity >= t.near_duplicate or (hashes_match and similarity >= t.similar):
        return NEAR_DUPLICATE
    if similarity >= t.similar:
        return SIMILAR
    return DIFFERENT


def compare(
    a: Fingerprint, b: Fingerprint, thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """The `/v1/compare` verdict: `{"verdict", "similarity", "hash_distance", "thresholds"}`.

    `similarity` is the embeddings' cosine; for an exact duplicate it is 1.0 by definition
    (the same pixels give the same embedding; the float round-off is not reported).
    """
    distances = {"phash": hamming(a.phash, b.phash), "dhash": hamming(a.dhash, b.dhash)}
    if _same_content(a, b):
        verdict, similarity = EXACT_DUPLICATE, 1.0
    else:
        similarity = cosine_similarity(a.embedding, b.embedding)
        verdict = _pair_verdict(similarity, distances["phash"], distances["dhash"], thresholds)
    return {
        "verdict": verdict,
        "similarity": similarity,
        "hash_distance": distances,
        "thresholds": thresholds.as_dict(),
    }


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def _hash_words(hashes: Sequence[str]) -> npt.NDArray[np.uint8]:
    """(N, 8) bytes of each 64-bit hex hash, for vectorised Hamming distances."""
    try:
        return np.array([list(bytes.fromhex(h)) for h in hashes], dtype=np.uint8).reshape(
            len(hashes), HASH_BITS // 8
        )
    except ValueError as exc:
        raise ValueError("every hash must be 16 hex digits") from exc


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _hamming_block(
    rows: npt.NDArray[np.uint8], every: npt.NDArray[np.uint8]
) -> npt.NDArray[np.int32]:
    """(len(rows), len(every)) Hamming distances between byte-packed hashes."""
    differing = _POPCOUNT[rows[:, None, :] ^ every[None, :, :]]
    return np.asarray(differing.sum(axis=2, dtype=np.int32), dtype=np.int32)


def _embedding_rows(fingerprints: Sequence[Fingerprint]) -> FloatArray:
    return unit_rows(np.stack([np.asarray(f.embedding).ravel() for f in fingerprints]))


def group_duplicates(
    fingerprints: Sequence[Fingerprint], thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """The `/v1/duplicates` groups: `[{"indices", "verdict", "similarity"}]`.

    A pair is linked when `compare` would call it an exact or a near duplicate (tiers 1-3);
    groups are the connected components of those links (transitive, single linkage: a copy
    of a copy joins the group even if it is further from the original), and an image with no
    link is in no group. A group's `verdict` is the weakest tier its members need:
    `exact_duplicate` only when every member has the same bytes or pixels as every other,
    else `near_duplicate`. Its `similarity` is the lowest cosine between any two members (1.0
    for an exact group), so a long chain shows up as a low value. Indices are ascending;
    groups are ordered by their first index.
    """
    count = len(fingerprints)
    if count < 2:
        return []
    linked = _UnionFind(count)
    exact = _UnionFind(count)
    for key in ("sha256", "pixel_sha256"):
        first_seen: dict[str, int] = {}
        for index, fingerprint in enumerate(fingerprints):
            value = getattr(fingerprint, key)
            if value == "":
                continue
            if value in first_seen:
                exact.union(first_seen[value], index)
                linked.union(first_seen[value], index)
            else:
                first_seen[value] = index

    embeddings = _embedding_rows(fingerprints)
    phashes = _hash_words([f.phash for f in fingerprints])
    dhashes = _hash_words([f.dhash for f in fingerprints])
    t = thresholds
    for start in range(0, count, _BLOCK_ROWS):
        stop = min(count, start + _BLOCK_ROWS)
        similarity = embeddings[start:stop] @ embeddings.T
        hashes_match = (_hamming_block(phashes[start:stop], phashes) <= t.phash_distance) & (
            _hamming_block(dhashes[start:stop], dhashes) <= t.dhash_distance
        )
        near = (similarity >= t.near_duplicate) | (hashes_match & (similarity >= t.similar))
        for row, column in zip(*np.nonzero(near), strict=True):
            if start + row < column:
                linked.union(start + int(row), int(column))

    members: dict[int, list[int]] = {}
    for index in range(count):
        members.setdefault(linked.find(index), []).append(index)
    groups = []
    for indices in sorted(members.values()):
        if len(indices) < 2:
            continue
        if len({exact.find(index) for index in indices}) == 1:
            verdict, lowest = EXACT_DUPLICATE, 1.0
        else:
            block = embeddings[indices] @ embeddings[indices].T
            verdict, lowest = NEAR_DUPLICATE, min(1.0, max(-1.0, float(block.min())))
        groups.append({"indices": indices, "verdict": verdict, "similarity": lowest})
    return groups
