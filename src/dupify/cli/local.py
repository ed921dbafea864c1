"""Local batch tools (`dupify embed`, `dupify dedupe`): the server's pipeline over files on disk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dupify.analysis.similarity import DEFAULT_THRESHOLDS, Fingerprint, group_duplicates
from dupify.config import Settings
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import BUNDLED_MODELS, ModelRegistry, roles_for
from dupify.inference.session import SessionPolicy
from dupify.pipeline.pipeline import Pipeline, build_pipeline

ResultT = TypeVar("ResultT")

# What `embed` and `dedupe` pick up in folders; a file named outright is always tried.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".mpo"})
# Files read and sent through the pipeline together: big enough to fill the model's batches,
# small enough that a folder of large photos never sits in memory at once.
CHUNK = 32


@dataclass
class Skipped:
    path: Path
    code: str
    message: str


@dataclass
class BatchOutcome:
    """Per-file results in input order (a row per readable image) and the files skipped."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def collect_images(paths: Iterable[Path]) -> list[Path]:
    """Files named outright, plus image files found recursively in folders; sorted, unique."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES:
                    found[candidate] = None
        elif path.is_file():
            found[path] = None
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return list(found)


@asynccontextmanager
async def local_pipeline(settings: Settings, model_ids: Sequence[str]) -> AsyncIterator[Pipeline]:
    """The server's pipeline with only the models this run needs, in this process (a
    `LocalBackend`), started and stopped around a run."""
    unknown = sorted(set(model_ids) - BUNDLED_MODELS.keys())
    if unknown:
        raise ApiError(
            "model_not_found",
            f"unknown model {unknown[0]!r}; available models: {', '.join(BUNDLED_MODELS)}",
        )
    decoder = await asyncio.to_thread(Decoder, settings.limits, settings.inference.decode_workers)
    try:
        registry = await asyncio.to_thread(
            ModelRegistry, settings.inference, only=frozenset(model_ids), roles=roles_for(settings)
        )
        backend = LocalBackend(registry, settings.inference)
        await backend.start()
        try:
            yield build_pipeline(
                decoder, registry, backend, SessionPolicy.from_settings(settings.inference)
            )
        finally:
            await backend.stop()
    finally:
        decoder.close()


async def _read_chunks(
    files: Sequence[Path], outcome: BatchOutcome
) -> AsyncIterator[list[tuple[Path, bytes]]]:
    for start in range(0, len(files), CHUNK):
        chunk: list[tuple[Path, bytes]] = []
        for path in files[start : start + CHUNK]:
            try:
                chunk.append((path, await asyncio.to_thread(path.read_bytes)))
            except OSError as exc:
                outcome.skipped.append(Skipped(path, "unreadable", str(exc)))
        yield chunk


async def _through_pipeline(
    files: Sequence[Path],
    run: Callable[[list[bytes]], Awaitable[Sequence[ResultT | ApiError]]],
    advance: Callable[[int], None],
) -> tuple[list[ResultT], BatchOutcome]:
    """Each readable file's result from `run` (a pipeline call), chunk by chunk, in order; the
    files the pipeline refused are skipped with its error."""
    outcome = BatchOutcome()
    results: list[ResultT] = []
    async for chunk in _read_chunks(files, outcome):
        each = await run([data for _, data in chunk])
        for (path, _), item in zip(chunk, each, strict=True):
            if isinstance(item, ApiError):
                outcome.skipped.append(Skipped(path, item.code, item.message))
            else:
                results.append(item)
                outcome.paths.append(path)
        advance(len(chunk))
    return results, outcome


async def embed_files(
    pipeline: Pipeline, files: Sequence[Path], model_id: str, advance: Callable[[int], None]
) -> tuple[np.ndarray, BatchOutcome]:
    """(N, dimensions) unit vectors for the decodable files, in order, and what was skipped.

    What `dupify embed` runs; any pipeline will do (tests pass one on a watched backend).
    """
    model = pipeline.registry.get(model_id)

    async def embed(images: list[bytes]) -> Sequence[np.ndarray | ApiError]:
        return await pipeline.embed(images, model_id, account=None)

    rows, outcome = await _through_pipeline(files, embed, advance)
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, model.dimensions))
    return matrix.astype(np.float32, copy=False), outcome


def write_embeddings(
    output: Path, matrix: np.ndarray, outcome: BatchOutcome, model_id: str
) -> tuple[Path, Path]:
    """`<output>.npy` (row i = file i) and `<output>.index.jsonl` (row, path, model)."""
    matrix_path = output.with_suffix(".npy")
    index_path = output.with_suffix(".index.jsonl")
    np.save(matrix_path, matrix)
    with index_path.open("w", encoding="utf-8") as index:
        for row, path in enumerate(outcome.paths):
            index.write(json.dumps({"row": row, "path": str(path), "model": model_id}) + "\n")
    return matrix_path, index_path


async def find_duplicate_files(
    pipeline: Pipeline, files: Sequence[Path], advance: Callable[[int], None]
) -> tuple[list[dict[str, Any]], BatchOutcome]:
    """Groups of duplicate files, tiered exactly as `/v1/duplicates` tiers them."""

    async def fingerprint(images: list[bytes]) -> Sequence[Fingerprint | ApiError]:
        return await pipeline.fingerprints(images, account=None)

    fingerprints, outcome = await _through_pipeline(files, fingerprint, advance)
    groups = group_duplicates(fingerprints, DEFAULT_THRESHOLDS) if len(fingerprints) > 1 else []
    for group in groups:
        group["paths"] = [str(outcome.paths[index]) for index in group["indices"]]
    return groups, outcome
