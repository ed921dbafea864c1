"""Duplicate verdicts for two images and duplicate groups in a set (API section 5), tiered:

1. exact: the same bytes (sha256, tier `exact_bytes`), or the same decoded pixels
   (`pixel_sha256`, when known; tier `exact_pixels`);
2. perceptual hash (tier `perceptual_hash`): pHash and dHash both within a few bits (resized or
   recompressed copies), counted only when the descriptors agree at least as much as
   `similar` requires, because the hashes of near-uniform images carry almost no information
   and collide;
3. descriptor (tier `descriptor`): cosine of the fingerprint model's vectors (dupify-copy-1,
   the registry's fingerprint role), the main signal: it catches crops, overlays, screenshots,
   mirroring and quarter turns, which change the hashes completely.

A near duplicate of tier 2 or 3 must also pass the shared-frame check (`frames`): two images
that are the same page around different content (one screenshot template, one meme frame, two
different photos in it) are no copies of each other, however alike the page makes them look.
Such a pair is `similar` (or `different`, by its cosine) and `compare` says why in
`shared_frame`.

Verdicts: `exact_duplicate` (tier 1), `near_duplicate` (tier 2, or cosine >= near_duplicate),
`similar` (cosine >= similar), `different`. Every verdict names the tier that decided it; a
`similar` or `different` one was decided by the descriptor.

The thresholds are calibrated for dupify-copy-1 on the copy-detection benchmark
(`bench/quality/`, docs/quality.md): 375 AugLy-edited copies of 125 real photos and 240
edited photos that are in no reference set, through the API's decode path. `near_duplicate`
(0.31) is the lowest cosine at which a query's best match is its source at least 99 % of the
time; `similar` (0.22) the cosine above which that holds 85 % of the time. See docs/api.md,
"Duplicate thresholds", for the measured precision and recall of each verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dupify.analysis.frames import Regions, different_content_in_one_frame
from dupify.analysis.hashes import HASH_BITS, hamming
from dupify.analysis.vectors import unit_rows

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SIMILAR = "similar"
DIFFERENT = "different"
# Which tier decided a verdict (the `tier` of /v1/compare and of each /v1/duplicates group).
EXACT_BYTES = "exact_bytes"
EXACT_PIXELS = "exact_pixels"
PERCEPTUAL_HASH = "perceptual_hash"
DESCRIPTOR = "descriptor"

# Calibrated for dupify-copy-1 (numbers above; rerun `make bench-quality` to check).
NEAR_DUPLICATE_COSINE = 0.31
SIMILAR_COSINE = 0.22
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
    is the image's vector from the fingerprint model (unit norm, as the model returns it);
    `regions` its cell descriptors for the shared-frame check, None when the fingerprint model
    gives none (the check is then skipped).
    """

    sha256: str
    pixel_sha256: str
    phash: str
    dhash: str
    embedding: FloatArray = field(repr=False)
    regions: Regions | None = field(default=None, repr=False, compare=False)


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


def _exact_tier(a: Fingerprint, b: Fingerprint) -> str | None:
    """`exact_bytes` or `exact_pixels` when the two have the same content, else None."""
    if a.sha256 == b.sha256:
        return EXACT_BYTES
    if a.pixel_sha256 != "" and a.pixel_sha256 == b.pixel_sha256:
        return EXACT_PIXELS
    return None


def _pair_verdict(
    similarity: float, phash_distance: int, dhash_distance: int, t: DuplicateThresholds
) -> tuple[str, str]:
    """The (verdict, tier) of tiers 2 and 3 (tier 1, exact content, is checked before)."""
    if similarity >= t.near_duplicate:
        return NEAR_DUPLICATE, DESCRIPTOR
    hashes_match = phash_distance <= t.phash_distance and dhash_distance <= t.dhash_distance
    if hashes_match and similarity >= t.similar:
        return NEAR_DUPLICATE, PERCEPTUAL_HASH
    return (SIMILAR if similarity >= t.similar else DIFFERENT), DESCRIPTOR


def compare(
    a: Fingerprint, b: Fingerprint, thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """The `/v1/compare` verdict: `{"verdict", "tier", "similarity", "hash_distance",
    "shared_frame", "thresholds"}`.

    `tier` names what decided: `exact_bytes`, `exact_pixels`, `perceptual_hash` (the hashes
    promoted a pair the descriptor alone calls similar) or `descriptor`. `similarity` is the
    descriptors' cosine; for an exact duplicate it is 1.0 by definition (the same pixels give
    the same descriptor; the float round-off is not reported). `shared_frame` is None, or
    `{"area", "content_similarity"}` when the shared-frame check turned a near duplicate down
    (the verdict is then `similar` or `different`, decided by the descriptor).
    """
    distances = {"phash": hamming(a.phash, b.phash), "dhash": hamming(a.dhash, b.dhash)}
    exact = _exact_tier(a, b)
    frame = None
    if exact is not None:
        verdict, tier, similarity = EXACT_DUPLICATE, exact, 1.0
    else:
        similarity = cosine_similarity(a.embedding, b.embedding)
        verdict, tier = _pair_verdict(
            similarity, distances["phash"], distances["dhash"], thresholds
        )
        if verdict == NEAR_DUPLICATE:
            frame = different_content_in_one_frame(a.regions, b.regions, similarity)
        if frame is not None:
            verdict = SIMILAR if similarity >= thresholds.similar else DIFFERENT
            tier = DESCRIPTOR
    return {
        "verdict": verdict,
        "tier": tier,
        "similarity": similarity,
        "hash_distance": distances,
        "shared_frame": None if frame is None else frame.as_dict(),
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


def _framed_apart(
    fingerprints: Sequence[Fingerprint], first: int, second: int, cosine: float
) -> bool:
    """Whether a pair of different files the near test links is turned down by the shared-frame
    check (pairs of the same bytes or pixels are exact duplicates: never)."""
    a, b = fingerprints[first], fingerprints[second]
    if _exact_tier(a, b) is not None:
        return False
    return different_content_in_one_frame(a.regions, b.regions, cosine) is not None


def group_duplicates(
    fingerprints: Sequence[Fingerprint], thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """The `/v1/duplicates` groups: `[{"indices", "verdict", "tier", "similarity"}]`.

    A pair is linked when `compare` would call it an exact or a near duplicate (tiers 1-3,
    after the shared-frame check);
    groups are the connected components of those links (transitive, single linkage: a copy
    of a copy joins the group even if it is further from the original), and an image with no
    link is in no group. A group's `verdict` is the weakest tier its members need:
    `exact_duplicate` only when every member has the same bytes or pixels as every other,
    else `near_duplicate`. Its `tier` is the weakest tier its links need: `exact_bytes` (every
    member the same file), `exact_pixels`, `descriptor` (exact and descriptor links connect
    it) or `perceptual_hash` (it needs a link that only the hashes made). Its `similarity` is
    the lowest cosine between any two members (1.0 for an exact group), so a long chain shows
    up as a low value. Indices are ascending; groups are ordered by their first index.
    """
    count = len(fingerprints)
    if count < 2:
        return []
    linked = _UnionFind(count)
    exact = _UnionFind(count)
    same_bytes = _UnionFind(count)
    strong = _UnionFind(count)  # exact and descriptor links, without the hash tier's
    for key in ("sha256", "pixel_sha256"):
        first_seen: dict[str, int] = {}
        for index, fingerprint in enumerate(fingerprints):
            value = getattr(fingerprint, key)
            if value == "":
                continue
            if value in first_seen:
                for forest in (exact, linked, strong):
                    forest.union(first_seen[value], index)
                if key == "sha256":
                    same_bytes.union(first_seen[value], index)
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
        by_descriptor = similarity >= t.near_duplicate
        near = by_descriptor | (hashes_match & (similarity >= t.similar))
        for row, column in zip(*np.nonzero(near), strict=True):
            first, second = start + int(row), int(column)
            cosine = float(similarity[row, column])
            if first >= second or _framed_apart(fingerprints, first, second, cosine):
                continue
            linked.union(first, second)
            if by_descriptor[row, column]:
                strong.union(first, second)

    members: dict[int, list[int]] = {}
    for index in range(count):
        members.setdefault(linked.find(index), []).append(index)
    groups = []
    for indices in sorted(members.values()):
        if len(indices) < 2:
            continue
        if len({exact.find(index) for index in indices}) == 1:
            verdict, lowest = EXACT_DUPLICATE, 1.0
            one_file = len({same_bytes.find(index) for index in indices}) == 1
            tier = EXACT_BYTES if one_file else EXACT_PIXELS
        else:
            block = embeddings[indices] @ embeddings[indices].T
            verdict, lowest = NEAR_DUPLICATE, min(1.0, max(-1.0, float(block.min())))
            one_strong = len({strong.find(index) for index in indices}) == 1
            tier = DESCRIPTOR if one_strong else PERCEPTUAL_HASH
        groups.append({"indices": indices, "verdict": verdict, "tier": tier, "similarity": lowest})
    return groups
