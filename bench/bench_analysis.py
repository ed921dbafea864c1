"""Time of each pixel analysis function on working images of real photos (medians of rounds).

These run in the decoder's worker processes once per analysed image, next to decoding.

    .venv/bin/python bench/bench_analysis.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data as samples

from dupify.analysis.colors import dominant_colors
from dupify.analysis.hashes import dhash, phash
from dupify.analysis.quality import measure_quality

FUNCTIONS: dict[str, Callable[[np.ndarray], object]] = {
    "dominant_colors": dominant_colors,
    "phash": phash,
    "dhash": dhash,
    "measure_quality": measure_quality,
}


def working_image(name: str, side: int) -> np.ndarray:
    """A real photo enlarged to a 3:2 image whose shorter side is `side` (the working side)."""
    photo = Image.fromarray(np.asarray(getattr(samples, name)())).convert("RGB")
    return np.asarray(photo.resize((side * 3 // 2, side), Image.Resampling.BICUBIC))


def median_ms(function: Callable[[np.ndarray], object], image: np.ndarray, rounds: int) -> float:
    function(image)  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function(image)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    table = Table(title=f"Pixel analysis, median ms of {args.rounds} rounds")
    table.add_column("image")
    for name in FUNCTIONS:
        table.add_column(name, justify="right")
    for photo in ("astronaut", "coffee", "chelsea"):
        for side in (256, 512):
            image = working_image(photo, side)
            cells = [f"{median_ms(f, image, args.rounds):.1f}" for f in FUNCTIONS.values()]
            table.add_row(f"{photo} {image.shape[1]}x{image.shape[0]}", *cells)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
