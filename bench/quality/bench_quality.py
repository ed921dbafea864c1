"""Copy detection in the manner of Meta's DISC21: one table for hashes, models and the verdict.

What `make bench-quality` runs (docs/quality.md has the method and the recorded results).
References are the real photos in `photos/reference/`; queries are those photos edited one
to three times with AugLy at a fixed seed (`copy_queries.py`), plus distractor queries (the
photos in `photos/distractor/`, edited the same way, are in no reference set) and a few
unedited re-uploads for the exact tier. Every file goes through the API's decode and model
path (`copy_methods.py`); the scores are DISC21's micro-AP over each query's top-10
references and recall at 90 % precision, plus the precision and recall of the product's
`near_duplicate` and `exact_duplicate` calls on each query's top-1 reference
(`copy_metrics.py`). `background/` is not read here: it is kept apart for fitting (whitening,
PCA) so that nothing fitted has seen the benchmark's photos.

    .venv/bin/python bench/quality/bench_quality.py                  # the table
    .venv/bin/python bench/quality/bench_quality.py --markdown       # also as Markdown
    .venv/bin/python bench/quality/bench_quality.py --models dupify-visual-1 --save-queries DIR

A model id that the registry does not bundle is skipped with a note, so the default list can
name models still to come.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from copy_methods import (
    Encoded,
    Method,
    encode,
    fingerprint_model_id,
    hash_methods,
    load,
    model_method,
    verdict_method,
)
from copy_metrics import Calls, Ranking, calls, micro_ap
from copy_queries import Query, make_queries
from frame_pairs import frame_rows
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos"
DEFAULT_MODELS = ("dupify-visual-1", "dupify-semantic-1", "dupify-copy-1")
SEED = 15


@dataclass(frozen=True)
class Row:
    method: Method
    ranking: Ranking
    near: Calls
    exact: Calls | None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="model ids")
    parser.add_argument("--seed", type=int, default=SEED, help="the queries' base seed")
    parser.add_argument("--per-reference", type=int, default=3, help="edited copies per photo")
    parser.add_argument("--per-distractor", type=int, default=4, help="queries per distractor")
    parser.add_argument("--exact-every", type=int, default=10, help="re-upload every Nth ref")
    parser.add_argument("--top-k", type=int, default=10, help="predictions per query (DISC21)")
    parser.add_argument(
        "--frame-photos", type=int, default=40, help="references framed per frame (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument("--save-queries", type=Path, help="write the query files here")
    return parser.parse_args()


def save_queries(folder: Path, queries: list[Query]) -> None:
    """The query files and a manifest (source, kind, edits), to look at what was scored."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for query in queries:
        suffix = ".png" if query.data.startswith(b"\x89PNG") else ".jpg"
        (folder / f"{query.name}{suffix}").write_bytes(query.data)
        manifest.append(
            {
                "file": f"{query.name}{suffix}",
                "source": query.source,
                "kind": query.kind,
                "edits": query.edits,
            }
        )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def fraction(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


def cells(row: Row) -> list[str]:
    near, exact = row.near, row.exact
    return [
        row.method.name,
        f"{row.ranking.micro_ap:.3f}",
        f"{row.ranking.recall_at_precision:.3f}",
        row.method.test,
        f"{fraction(near.precision)} ({near.correct}/{near.called})",
        f"{fraction(near.recall)} ({near.correct}/{near.positives})",
        str(near.wrong_pairs),
        f"{fraction(exact.precision)} ({exact.correct}/{exact.called})" if exact else "",
        f"{fraction(exact.recall)} ({exact.correct}/{exact.positives})" if exact else "",
    ]


COLUMNS = (
    "method", "micro-AP", "recall @ 90% precision", "near_duplicate test (product thresholds)",
    "near_duplicate precision", "near_duplicate recall", "wrong pairs called near",
    "exact_duplicate precision", "exact_duplicate recall",
)  # fmt: skip


def edit_family(label: str) -> str:
    """The edit's name without its parameters ("crop 0.41" -> "crop")."""
    return label.split()[0] if not label.startswith("onto") else "onto another photo"


def per_edit(
    rows: list[Row], queries: list[Query], source: np.ndarray
) -> tuple[list[str], list[list[str]]]:
    """Share of edited copies whose best reference is their source, by edit (a copy with
    several edits counts under each): what each method ranks right, threshold aside."""
    copies = [i for i, q in enumerate(queries) if q.kind == "copy"]
    edits = {i: {edit_family(e) for e in queries[i].edits} for i in copies}
    families = Counter(family for i in copies for family in edits[i])
    best = [np.argmax(row.method.similarity, axis=1) for row in rows]
    body = []
    for family, count in sorted(families.items(), key=lambda item: (-item[1], item[0])):
        having = [i for i in copies if family in edits[i]]
        shares = [float(np.mean(top[having] == source[having])) for top in best]
        body.append([family, str(count), *(f"{share:.2f}" for share in shares)])
    return ["edit", "copies", *(row.method.name for row in rows)], body


def markdown(header: list[str] | tuple[str, ...], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def score(method: Method, source: np.ndarray, kinds: np.ndarray, k: int) -> Row:
    """The DISC21 scores and the near_duplicate calls on the edited and distractor queries;
    the exact_duplicate calls (the verdict only) on every query, re-uploads included."""
    edited = kinds != "exact"
    similarity = method.similarity[edited]
    exact = None
    if method.exact is not None:
        exact = calls(method.similarity, method.exact, source, kinds == "exact")
    return Row(
        method,
        micro_ap(similarity, source[edited], k),
        calls(similarity, method.near[edited], source[edited], kinds[edited] == "copy"),
        exact,
    )


def framed_pairs(
    fingerprints: Encoded, references: list[Path], count: int
) -> tuple[list[str], list[list[str]]]:
    """The (edited, edited) table of frame_pairs.py: one row per frame, none when skipped."""
    header = [
        "frame",
        "pairs of different photos",
        "called near, descriptor alone",
        "called near, verdict",
        "framed copies found (verdict)",
    ]
    if count < 2:
        return header, []
    rows = frame_rows(fingerprints.model, references, count)
    body = [
        [
            row.frame,
            str(row.pairs),
            str(row.near_descriptor),
            str(row.near_verdict),
            f"{row.found}/{row.copies}",
        ]
        for row in rows
    ]
    return header, body


def main() -> int:
    args = parse_args()
    console = Console(width=200)  # the table is wide; keep it whole when piped to a file
    started = time.perf_counter()
    references = sorted((PHOTOS / "reference").glob("*.jpg"))
    distractors = sorted((PHOTOS / "distractor").glob("*.jpg"))
    queries = make_queries(
        references,
        distractors,
        args.seed,
        args.per_reference,
        args.per_distractor,
        args.exact_every,
    )
    made = time.perf_counter() - started
    if args.save_queries:
        save_queries(args.save_queries, queries)
    files = [path.read_bytes() for path in references] + [q.data for q in queries]
    n_refs = len(references)
    index = {path.name: i for i, path in enumerate(references)}
    source = np.array([-1 if q.kind == "distractor" else index[q.source] for q in queries])
    kinds = np.array([q.kind for q in queries])

    models, notes = load(args.models, args.threads)
    encoded = {model.id: encode(model, files) for model in models}
    fingerprints = encoded[fingerprint_model_id()]
    methods = hash_methods(fingerprints, n_refs)
    methods += [model_method(encoded[m.id], n_refs) for m in models if m.id in args.models]
    methods.append(verdict_method(fingerprints, n_refs))
    rows = [score(method, source, kinds, args.top_k) for method in methods]

    counts = Counter(q.kind for q in queries)
    title = (
        f"Copy detection, DISC21 style: {n_refs} references, {counts['copy']} edited copies, "
        f"{counts['distractor']} distractor queries ({len(distractors)} photos in no reference "
        f"set), {counts['exact']} unedited re-uploads; AugLy {version('augly')}, seed {args.seed}"
    )
    table = Table(title=title)
    for column in COLUMNS:
        words = column.startswith(("method", "near_duplicate test"))
        table.add_column(column, justify="left" if words else "right")
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)
    edit_header, edit_body = per_edit(rows, queries, source)
    edit_table = Table(title="Top-1 is the source, by edit (edited copies; threshold-free)")
    for i, column in enumerate(edit_header):
        edit_table.add_column(column.replace(" (", "\n("), justify="left" if i == 0 else "right")
    for line in edit_body:
        edit_table.add_row(*line)
    console.print(edit_table)
    frame_header, frame_body = framed_pairs(fingerprints, references, args.frame_photos)
    if frame_body:
        frame_table = Table(title="Different photos in one frame (edited, edited pairs)")
        for i, column in enumerate(frame_header):
            frame_table.add_column(column, justify="left" if i == 0 else "right")
        for line in frame_body:
            frame_table.add_row(*line)
        console.print(frame_table)
    for note in notes:
        console.print(f"note: {note}")
    timing = ", ".join(f"{m} {e.seconds:.0f} s" for m, e in encoded.items())
    console.print(
        f"queries made in {made:.0f} s; decode + hashes + model per pass: {timing}; "
        f"total {time.perf_counter() - started:.0f} s"
    )
    if args.markdown:  # plain print: Rich would read the cells' brackets as markup
        print(f"\n{markdown(COLUMNS, [cells(row) for row in rows])}\n")
        print(markdown(edit_header, edit_body))
        if frame_body:
            print(f"\n{markdown(frame_header, frame_body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
