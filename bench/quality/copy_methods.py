"""The methods the benchmark scores, each run on the photos through the API's own code path.

Every file (reference or query) goes through `inspect_image` (the decode policy of
`decode_image` at the model's working side, plus the pHash and dHash of those pixels) and the
model's `preprocess` and `predict`, as `/v1/embeddings`, `/v1/compare` and `/v1/duplicates`
run them; the fingerprints for the verdict are assembled by the pipeline's own
`post.fingerprint`. What each method yields is a similarity matrix (queries x references,
higher = more alike) and the product's own yes/no test at its shipped thresholds:

- "pHash" and "dHash": 1 - Hamming distance / 64 of the 64-bit hash; a near duplicate at the
  hash tier's bit limit (`similarity.PHASH_NEAR_DUPLICATE_BITS`, `DHASH_...`), hashes taken
  from the fingerprint model's decode as compare does;
- each model id: the cosine of its embeddings; a near duplicate at the cosine threshold of
  `similarity.DEFAULT_THRESHOLDS` (calibrated for the fingerprint model, dupify-copy-1, and
  applied to the others as they are), or at a model's own former calibration
  (`OWN_NEAR_COSINE`: dupify-visual-1's 0.79);
- "verdict": `similarity.compare` on every (query, reference) pair with the fingerprint
  model's fingerprints (cell descriptors included, so the shared-frame check runs), exactly
  as `/v1/compare` decides; its ranking score puts a stronger verdict first (exact, near,
  similar, different), then the higher cosine.

A model id is looked up in the registry's bundled models: an id that is not there (say a
model still to come) is skipped with a note, so a new model is one more id in the list.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dupify.analysis import similarity as sim
from dupify.analysis.hashes import HASH_BITS
from dupify.analysis.similarity import Fingerprint
from dupify.analysis.vectors import unit_rows
from dupify.config import ImageLimits, InferenceSettings
from dupify.inference.models.base import EMBEDDING, REGIONS, ImageModel
from dupify.inference.registry import (
    BUNDLED_MODELS,
    DEFAULT_ROLES,
    FINGERPRINT_ROLE,
    load_default_models,
)
from dupify.pipeline.post import fingerprint
from dupify.pipeline.pre import Inspection, inspect_image

FloatMatrix = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]
BATCH = 16  # the server's micro-batch (InferenceSettings.max_batch)
# Verdicts in rising strength: the verdict's ranking score is 2 x this + the cosine.
VERDICT_RANK = {sim.DIFFERENT: 0, sim.SIMILAR: 1, sim.NEAR_DUPLICATE: 2, sim.EXACT_DUPLICATE: 3}


@dataclass(frozen=True)
class Method:
    """One row of the table: scores for every (query, reference) pair and the product's tests."""

    name: str
    test: str  # the near-duplicate test, in words
    similarity: FloatMatrix
    near: BoolMatrix  # called near_duplicate (or exact_duplicate) by the product's test
    exact: BoolMatrix | None = None  # called exact_duplicate (the verdict only)


@dataclass(frozen=True)
class Encoded:
    """One model's pass over the files: unit embeddings, each file's inspection and, for a
    model that gives them, each file's cell descriptors (float16, for the shared-frame check)."""

    model: ImageModel
    embeddings: npt.NDArray[np.float32]
    inspections: list[Inspection]
    seconds: float
    regions: npt.NDArray[np.float16] | None = None

    def fingerprints(self) -> list[Fingerprint]:
        """Each file's fingerprint, assembled by the pipeline's own `post.fingerprint`."""
        space = self.model.region_space
        return [
            fingerprint(
                inspection,
                {EMBEDDING: self.embeddings[i]}
                | ({} if self.regions is None else {REGIONS: self.regions[i]}),
                space,
            )
            for i, inspection in enumerate(self.inspections)
        ]


def encode(model: ImageModel, files: Sequence[bytes]) -> Encoded:
    """Decode, hash and embed every file as the API does, in the server's batch size."""
    start = time.perf_counter()
    limits = ImageLimits()
    inspections = [
        inspect_image(data, limits, model.working_side, frozenset({"hashes"})) for data in files
    ]
    rows, cells = [], []
    for first in range(0, len(inspections), BATCH):
        batch = inspections[first : first + BATCH]
        tensors = np.stack([model.preprocess(item.image.pixels) for item in batch])
        outputs = model.predict(tensors)
        rows.append(outputs[EMBEDDING])
        if model.region_space is not None:
            cells.append(np.asarray(outputs[REGIONS], dtype=np.float16))
    embeddings = unit_rows(np.concatenate(rows))
    regions = np.concatenate(cells) if cells else None
    return Encoded(model, embeddings, inspections, time.perf_counter() - start, regions)


def fingerprint_model_id() -> str:
    """The model whose embeddings compare and duplicates use (the registry's default role)."""
    return DEFAULT_ROLES[FINGERPRINT_ROLE]


def load(model_ids: Sequence[str], threads: int) -> tuple[list[ImageModel], list[str]]:
    """The bundled models among `model_ids` (the fingerprint model always), and a note for
    each id that is not a bundled model."""
    wanted = list(dict.fromkeys([*model_ids, fingerprint_model_id()]))
    present = [m for m in wanted if m in BUNDLED_MODELS]
    notes = [f"{m}: not a bundled model here, skipped" for m in wanted if m not in present]
    models = load_default_models(InferenceSettings(intra_op_threads=threads), only=present)
    return sorted(models, key=lambda m: present.index(m.id)), notes


def _hash_bytes(hashes: Sequence[str]) -> npt.NDArray[np.uint8]:
    return np.array([list(bytes.fromhex(h)) for h in hashes], dtype=np.uint8)


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.int64)


def hamming_matrix(queries: Sequence[str], references: Sequence[str]) -> npt.NDArray[np.int64]:
    """(queries, references) Hamming distances between 64-bit hex hashes."""
    q, r = _hash_bytes(queries), _hash_bytes(references)
    return np.asarray(_POPCOUNT[q[:, None, :] ^ r[None, :, :]].sum(axis=2), dtype=np.int64)


def hash_methods(fingerprint_pass: Encoded, n_refs: int) -> list[Method]:
    """pHash and dHash of the fingerprint model's decode (references first in the pass)."""
    methods = []
    for name, key, limit in (
        ("pHash", "phash", sim.PHASH_NEAR_DUPLICATE_BITS),
        ("dHash", "dhash", sim.DHASH_NEAR_DUPLICATE_BITS),
    ):
        hashes = [item.measures["hashes"][key] for item in fingerprint_pass.inspections]
        distances = hamming_matrix(hashes[n_refs:], hashes[:n_refs])
        methods.append(
            Method(
                f"64-bit {name}",
                f"<= {limit} bits",
                1.0 - distances / HASH_BITS,
                distances <= limit,
            )
        )
    return methods


# A model's own near-duplicate cosine where it had one: dupify-visual-1 was the fingerprint
# model until dupify-copy-1, with 0.79 (bench/calibrate_duplicates.py).
OWN_NEAR_COSINE = {"dupify-visual-1": 0.79}


def model_method(encoded: Encoded, n_refs: int) -> Method:
    """Cosine of one model's embeddings; near at the shipped cosine threshold (the fingerprint
    model's), or at the model's own former calibration."""
    cosine = encoded.embeddings[n_refs:] @ encoded.embeddings[:n_refs].T
    threshold = sim.DEFAULT_THRESHOLDS.near_duplicate
    note = ""
    if encoded.model.id in OWN_NEAR_COSINE:
        threshold, note = OWN_NEAR_COSINE[encoded.model.id], " (its former calibration)"
    elif encoded.model.id != fingerprint_model_id():
        note = " (not its calibration)"
    return Method(
        encoded.model.id,
        f"cosine >= {threshold:.2f}{note}",
        cosine.astype(np.float64),
        cosine >= threshold,
    )


def verdict_method(fingerprint_pass: Encoded, n_refs: int) -> Method:
    """`compare` on every (query, reference) pair, with the pipeline's own fingerprints."""
    prints = fingerprint_pass.fingerprints()
    references, queries = prints[:n_refs], prints[n_refs:]
    score = np.zeros((len(queries), n_refs))
    near = np.zeros((len(queries), n_refs), dtype=bool)
    exact = np.zeros_like(near)
    for i, query in enumerate(queries):
        for j, reference in enumerate(references):
            result = sim.compare(query, reference)
            verdict = result["verdict"]
            score[i, j] = 2 * VERDICT_RANK[verdict] + result["similarity"]
            near[i, j] = verdict in (sim.NEAR_DUPLICATE, sim.EXACT_DUPLICATE)
            exact[i, j] = verdict == sim.EXACT_DUPLICATE
    t = sim.DEFAULT_THRESHOLDS
    return Method(
        f"verdict ({fingerprint_pass.model.id})",
        f"compare(): cosine >= {t.near_duplicate:.2f}, or pHash <= {t.phash_distance} "
        f"and dHash <= {t.dhash_distance} bits with cosine >= {t.similar:.2f}",
        score,
        near,
        exact,
    )
