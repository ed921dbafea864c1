"""Decode-and-measure, run inside a decoder worker: the pixel features travel back, not the work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dupify.analysis.colors import dominant_colors
from dupify.analysis.hashes import dhash, phash, sha256_hex
from dupify.analysis.quality import measure_quality
from dupify.config import ImageLimits
from dupify.images.cost import decode_cost
from dupify.images.decoding import DecodedImage, decode_image

# The analysis features computed from pixels alone, in the worker that decoded them.
PIXEL_MEASURES = frozenset({"colors", "hashes", "quality"})


@dataclass(frozen=True)
class Inspection:
    """A decoded image plus the pixel measures asked for (keyed by feature name).

    `image` is decoded at the models' working side, so embeddings, labels and the measures do
    not depend on which other features a request asked for; `detail`, when asked for, is the
    same upload decoded again at a larger side for OCR and face detection.
    """

    image: DecodedImage
    measures: dict[str, Any] = field(default_factory=dict)
    detail: DecodedImage | None = None


def inspect_image(
    data: bytes,
    limits: ImageLimits,
    working_side: int,
    measures: frozenset[str],
    max_colors: int = 5,
    detail_side: int = 0,
) -> Inspection:
    """Decode under the policy of `decode_image`, then compute each requested pixel measure.

    Runs in a worker process (so it is a plain module-level function of picklable arguments);
    the measures are cheap next to decoding, and computing them here keeps them off the
    server's event loop and out of its GIL. With a `detail_side` above `working_side`, the
    upload is decoded a second time at that side (JPEG DCT scaling makes the small decode
    cheap, and OCR or faces cost far more than either).
    """
    image = decode_image(data, limits, working_side)
    detail = decode_image(data, limits, detail_side) if detail_side > working_side else None
    results: dict[str, Any] = {}
    if "colors" in measures:
        results["colors"] = dominant_colors(image.pixels, max_colors)
    if "hashes" in measures:
        results["hashes"] = {
            "sha256": sha256_hex(data),
            "phash": phash(image.pixels),
            "dhash": dhash(image.pixels),
        }
    if "quality" in measures:
        results["quality"] = measure_quality(image.pixels)
    return Inspection(image=image, measures=results, detail=detail)


def inspection_cost(
    data: bytes, limits: ImageLimits, working_side: int, detail_side: int = 0
) -> int:
    """What `inspect_image` with these sides costs to decode (dupify.images.cost), read from the
    header: the second, larger decode for `detail_side` decodes the whole upload again."""
    cost = decode_cost(data, limits, working_side)
    if detail_side > working_side:
        cost += decode_cost(data, limits, detail_side)
    return cost
