"""`dupify embed` and `dupify dedupe`: the server's pipeline over local files, no server needed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.progress import Progress
from rich.table import Table

from dupify.analysis.similarity import DEFAULT_THRESHOLDS
from dupify.cli import local as batch
from dupify.cli.common import console, errors, load_settings
from dupify.errors import ApiError
from dupify.inference.registry import FINGERPRINT_ROLE, roles_for

T = TypeVar("T")
file_commands = typer.Typer()  # merged into `dupify`


@file_commands.command()
def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (recursive).")],
    output: Annotated[
        Path, typer.Option(help="Writes OUTPUT.npy (one row per image) and OUTPUT.index.jsonl.")
    ] = Path("embeddings"),
    model: Annotated[str | None, typer.Option(help="Model id (default: the server's).")] = None,
) -> None:
    """Embed local images with the server's pipeline; no server needed."""
    settings = load_settings()
    files = _image_files(paths)
    model_id = model or settings.default_model

    async def run() -> tuple[np.ndarray, batch.BatchOutcome]:
        async with batch.local_pipeline(settings, [model_id]) as pipeline:
            with _progress("Embedding", len(files)) as advance:
                return await batch.embed_files(pipeline, files, model_id, advance)

    matrix, outcome = _run_batch(run)
    _report_skipped(outcome)
    matrix_path, index_path = batch.write_embeddings(output, matrix, outcome, model_id)
    console.print(f"{matrix.shape[0]} embeddings ({model_id}) -> {matrix_path}, {index_path}")


@file_commands.command()
def dedupe(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (recursive).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Group duplicate images, tiered as /v1/duplicates does; no server needed."""
    settings = load_settings()
    files = _image_files(paths)
    # The model the duplicate thresholds are calibrated on, as /v1/duplicates uses it.
    model_id = roles_for(settings)[FINGERPRINT_ROLE]

    async def run() -> tuple[list[dict[str, Any]], batch.BatchOutcome]:
        async with batch.local_pipeline(settings, [model_id]) as pipeline:
            with _progress("Fingerprinting", len(files), hidden=as_json) as advance:
                return await batch.find_duplicate_files(pipeline, files, advance)

    groups, outcome = _run_batch(run)
    if as_json:
        report = {
            "model": model_id,
            "thresholds": DEFAULT_THRESHOLDS.as_dict(),
            "files": [str(path) for path in outcome.paths],
            "groups": groups,
            "skipped": [vars(item) | {"path": str(item.path)} for item in outcome.skipped],
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    _report_skipped(outcome)
    if not groups:
        console.print(f"No duplicates among {len(outcome.paths)} images.")
        return
    table = Table("group", "verdict", "tier", "similarity", "files")
    for number, group in enumerate(groups, start=1):
        table.add_row(
            str(number),
            group["verdict"],
            group["tier"],
            f"{group['similarity']:.3f}",
            "\n".join(group["paths"]),
        )
    console.print(table)


def _image_files(paths: Sequence[Path]) -> list[Path]:
    try:
        files = batch.collect_images(paths)
    except FileNotFoundError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not files:
        errors.print("[red]error:[/red] no image files found")
        raise typer.Exit(2)
    return files


@contextmanager
def _progress(label: str, total: int, hidden: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout stays clean for --json)."""
    with Progress(console=errors, disable=hidden, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)


def _run_batch(run: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(run())
    except ApiError as exc:  # e.g. an unknown --model
        errors.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def _report_skipped(outcome: batch.BatchOutcome) -> None:
    for item in outcome.skipped:
        console.print(f"skipped {item.path}: {item.code}: {item.message}", soft_wrap=True)
