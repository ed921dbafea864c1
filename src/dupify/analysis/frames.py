"""The shared-frame check: region-level evidence that keeps a common frame from making a copy.

A whole-image descriptor pools everything in the picture. Two different photos pasted into the
same page (a phone screenshot, a feed post, a meme template) share the page, and the page can
carry the pooled descriptors of both past the near-duplicate threshold while the photos, the
content, have nothing in common. The fingerprint model therefore also gives each image its
region descriptors: GeM over each cell of an 8x8 grid of its feature map (`Regions`). For a
pair the descriptor tier calls a near duplicate, this module asks:

1. which cells show the same picture at the same place in both images (cell descriptors at
   cosine >= `SAME_CELL_COSINE`: a shared frame renders the same pixels there);
2. if such cells cover at least `MIN_SHARED_AREA` of the grid and the rest covers at least
   `MIN_CONTENT_AREA` (a frame with room for a photo, not an overlay on a photo), the rest is
   the content: its descriptor in each image (GeM over those cells only, whitened like the
   whole-image one) is compared;
3. content at cosine < `CONTENT_COSINE` is different content in the same frame, and the pair
   is no copy. Pairs whose whole-image cosine reaches `FRAME_CHECK_BELOW` are left to the
   descriptor: text and emoji overlays on one photo score that high, frames around two
   different photos did not.

Measured with `make bench-quality` (bench/quality/frame_pairs.py, docs/quality.md), over 780
pairs of different photos per frame: called near duplicates by the descriptor alone, then with
this check, in a drawn phone page 714 -> 41, in AugLy's `web.png` template 134 -> 18, in its
`mobile.png` 59 -> 41 (there the photo fills a third of the page and its edges blur the grid:
the check misses most); it costs two of the benchmark's 375 edited copies (near_duplicate
recall 0.856 -> 0.851, precision 0.994 either way). The constants below were chosen there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dupify.analysis.vectors import unit_rows

FloatArray = npt.NDArray[np.float32]

# Bumped whenever what the cells hold or how the check reads them changes: cached fingerprints
# of another version are not reused (api/analyze.py keys them with it).
REGIONS_VERSION = 1
GRID = 8  # cells per side of the region grid: 64 cells, each 1/8 x 1/8 of the (resized) image
SAME_CELL_COSINE = 0.95  # a cell shows the same picture in both images (raw cell descriptors)
MIN_SHARED_AREA = 0.15  # a frame: at least this share of the grid the same in both
MIN_CONTENT_AREA = 0.2  # ...and at least this share different (room for a photo)
CONTENT_COSINE = 0.5  # the differing parts at a lower whitened cosine are different content
FRAME_CHECK_BELOW = 0.6  # whole-image cosine from which a match is the descriptor's alone


@dataclass(frozen=True)
class RegionSpace:
    """How a region descriptor is made: GeM of `power` over cells of the feature map, then the
    fingerprint model's whitening (`mean`, `projection`), then unit length."""

    power: float
    mean: FloatArray = field(repr=False)
    projection: FloatArray = field(repr=False)

    def describe(self, cells: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """(k, C) cell GeM descriptors -> the unit whitened descriptor of their union."""
        powered = np.power(np.asarray(cells, dtype=np.float64), self.power).mean(axis=0)
        pooled = unit_rows(np.power(powered, 1.0 / self.power)[None, :])
        whitened: FloatArray = unit_rows((pooled - self.mean) @ self.projection)[0]
        return whitened


@dataclass(frozen=True)
class Regions:
    """One image's cell descriptors: (GRID * GRID, C) GeM over each cell, row-major, stored as
    float16 (64 x 512 x 2 bytes = 64 KiB with dupify-copy-1), and the space they live in."""

    cells: npt.NDArray[np.float16] = field(repr=False)
    space: RegionSpace = field(repr=False)

    def __post_init__(self) -> None:
        if self.cells.ndim != 2 or self.cells.shape[0] != GRID * GRID:
            shape = self.cells.shape
            raise ValueError(f"expected ({GRID * GRID}, C) cell descriptors, got {shape}")


@dataclass(frozen=True)
class SharedFrame:
    """What the check found for a pair: the share of the grid the two images have in common,
    and the whitened cosine of the rest (their content)."""

    area: float
    content_similarity: float

    def as_dict(self) -> dict[str, float]:
        return {"area": round(self.area, 4), "content_similarity": self.content_similarity}


def shared_frame(a: Regions, b: Regions) -> SharedFrame | None:
    """The frame two images share and how alike the rest is, or None when they share too little
    to be a frame, or differ in too small a part to hold a photo (an overlay, not content)."""
    if a.cells.shape != b.cells.shape:
        return None
    cells_a = np.asarray(a.cells, dtype=np.float32)
    cells_b = np.asarray(b.cells, dtype=np.float32)
    same = np.einsum("ij,ij->i", unit_rows(cells_a), unit_rows(cells_b)) >= SAME_CELL_COSINE
    area = float(same.mean())
    if area < MIN_SHARED_AREA or 1.0 - area < MIN_CONTENT_AREA:
        return None
    content = ~same
    similarity = float(a.space.describe(cells_a[content]) @ b.space.describe(cells_b[content]))
    return SharedFrame(area, min(1.0, max(-1.0, similarity)))


def different_content_in_one_frame(
    a: Regions | None, b: Regions | None, cosine: float
) -> SharedFrame | None:
    """The shared frame of a pair whose descriptor match it explains (same frame, different
    content), else None: then the descriptor's verdict stands."""
    if a is None or b is None or cosine >= FRAME_CHECK_BELOW:
        return None
    frame = shared_frame(a, b)
    if frame is None or frame.content_similarity >= CONTENT_COSINE:
        return None
    return frame
