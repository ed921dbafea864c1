"""Per-image latency of the opt-in `text` (OCR) and `faces` components, at their working sides.

Usage: .venv/bin/python bench/bench_text_faces.py [--rounds 5]
Prints the load time of each component and the median (min..max) of `rounds` calls per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from dupify.inference.models import faces, text
from dupify.inference.session import SessionPolicy

Pixels = npt.NDArray[np.uint8]


def at_side(pixels: Pixels, side: int) -> Pixels:
    """Scaled so the shorter side is `side`, as the decoder would hand it over (4:3 photos)."""
    height, width = pixels.shape[:2]
    scale = side / min(height, width)
    size = (round(width * scale), round(height * scale))
    return np.ascontiguousarray(cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC))


def poster(side: int) -> Pixels:
    """A photo with three lines of print on it, like a shop sign."""
    canvas = Image.fromarray(at_side(skimage.data.coffee(), side))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((30, 30, 520, 250), fill="white")
    for row, (words, size) in enumerate((("SUMMER SALE", 56), ("50% OFF", 48), ("open 24h", 32))):
        draw.text((40, 40 + row * 70), words, font=ImageFont.load_default(size=size), fill="black")
    return np.asarray(canvas)


def timed(call: Callable[[], Any], rounds: int) -> tuple[float, float, float]:
    call()  # the first call of a shape allocates ONNX Runtime buffers: not what a request pays
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    reader = text.TextReader(SessionPolicy())
    text_load = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    detector = faces.FaceDetector(SessionPolicy())
    faces_load = (time.perf_counter() - start) * 1000
    print(f"load: TextReader {text_load:.0f} ms, FaceDetector {faces_load:.0f} ms")

    print("| component | image | size | found | ms per image, median (min..max) |")
    print("|---|---|---|---|---|")
    for label, component, side in (
        ("text", reader.read, text.WORKING_SIDE),
        ("faces", detector.detect, faces.WORKING_SIDE),
    ):
        images = {
            "astronaut": at_side(skimage.data.astronaut(), side),
            "coffee": at_side(skimage.data.coffee(), side),
            "poster": poster(side),
        }
        for name, pixels in images.items():
            found = len(component(pixels))
            median, low, high = timed(lambda c=component, p=pixels: c(p), args.rounds)
            height, width = pixels.shape[:2]
            print(
                f"| {label} | {name} | {width}x{height} | {found} | "
                f"{median:.0f} ({low:.0f}..{high:.0f}) |"
            )


if __name__ == "__main__":
    main()
