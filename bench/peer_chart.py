"""The chart of `make bench --chart`: Dupify vs the hand-written peer (and the framework floor
for a cache hit), requests/s and p50 per load, as a PNG (matplotlib, a bench-only dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt


def write_chart(rows: list[Any], target: Path) -> None:
    """rows: bench_peers.Row (server, name, rps, p50). Loads both servers ran side by side."""
    by = {(row.server, row.name): row for row in rows}
    loads = [
        ("embeddings 512 px", "peer"),
        ("embeddings 12 MP", "peer"),
        ("cache hit 512 px", "floor"),
    ]
    labels = [f"{name}\n(vs {other})" for name, other in loads]
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    for axis, metric, title in (
        (rates, "rps", "requests/s (higher is better)"),
        (latency, "p50", "p50 latency, ms (lower is better)"),
    ):
        ours = [getattr(by[("dupify", name)], metric) for name, _ in loads]
        theirs = [getattr(by[(other, name)], metric) for name, other in loads]
        xs = range(len(loads))
        axis.bar([x - width / 2 for x in xs], ours, width, label="Dupify", color="#2b6cb0")
        axis.bar([x + width / 2 for x in xs], theirs, width, label="peer / floor", color="#a0aec0")
        axis.set_xticks(list(xs), labels, fontsize=8)
        axis.set_yscale("log")  # the rows differ by orders of magnitude; ratios read as gaps
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
    figure.suptitle("Dupify vs a hand-written FastAPI + Pillow + ONNX Runtime server", fontsize=11)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
