"""The shared-frame check (dupify.analysis.frames) on cell descriptors built to order, and the
fingerprint model's cells against its own descriptor."""

from __future__ import annotations

import numpy as np
import pytest

from dupify.analysis import frames
from dupify.analysis.frames import GRID, Regions, RegionSpace, shared_frame
from dupify.analysis.similarity import Fingerprint, compare, group_duplicates
from dupify.inference.models.base import EMBEDDING, REGIONS
from dupify.inference.registry import FINGERPRINT_ROLE, ModelRegistry
from support.samples import sample_photo

CHANNELS = 32
CELLS = GRID * GRID
IDENTITY = RegionSpace(3.0, np.zeros(CHANNELS, np.float32), np.eye(CHANNELS, dtype=np.float32))


def cells(seed: int) -> np.ndarray:
    """Non-negative cell descriptors of one picture: each cell unlike the others, and the
    picture's own mix of channels (what sets its pooled descriptor apart from another's)."""
    rng = np.random.default_rng(seed)
    mix = np.exp(2.0 * rng.standard_normal(CHANNELS))
    return (rng.gamma(0.5, 1.0, (CELLS, CHANNELS)) * mix).astype(np.float32)


def pair(shared: int, content_seed: int = 2) -> tuple[Regions, Regions]:
    """Two images whose first `shared` cells are one frame and whose other cells differ."""
    frame, a, b = cells(1), cells(content_seed), cells(content_seed + 100)
    a[:shared], b[:shared] = frame[:shared], frame[:shared]
    return Regions(a.astype(np.float16), IDENTITY), Regions(b.astype(np.float16), IDENTITY)


def fingerprint(name: str, regions: Regions | None, embedding: np.ndarray) -> Fingerprint:
    return Fingerprint(name, "", "0" * 16, "f" * 16, embedding, regions)


def test_a_frame_around_different_content_is_found() -> None:
    a, b = pair(shared=24)  # 37.5 % of the grid
    frame = shared_frame(a, b)
    assert frame is not None
    assert frame.area == pytest.approx(24 / CELLS)
    assert frame.content_similarity < frames.CONTENT_COSINE
    assert frames.different_content_in_one_frame(a, b, cosine=0.45) == frame


@pytest.mark.parametrize(
    ("shared", "why"),
    [
        (6, "too little in common to be a frame"),
        (52, "too little left to hold a photo: an overlay"),
        (CELLS, "one picture"),
    ],
)
def test_no_frame_without_room_on_both_sides(shared: int, why: str) -> None:
    a, b = pair(shared)
    assert shared_frame(a, b) is None, why


def test_the_same_content_in_one_frame_is_left_to_the_descriptor() -> None:
    frame, content = cells(1), cells(7)
    one, two = frame.copy(), frame.copy()
    one[24:] = content[24:]
    # The same content shifted in the frame by three cells: no cell is "the same" as the cell
    # at its place in the other image, the content as a whole is.
    two[24:] = np.roll(content[24:], 3, axis=0)
    a, b = Regions(one.astype(np.float16), IDENTITY), Regions(two.astype(np.float16), IDENTITY)
    found = shared_frame(a, b)
    assert found is not None
    assert found.area == pytest.approx(24 / CELLS)
    assert found.content_similarity >= frames.CONTENT_COSINE
    assert frames.different_content_in_one_frame(a, b, cosine=0.45) is None


def test_a_strong_descriptor_match_or_missing_cells_skip_the_check() -> None:
    a, b = pair(shared=24)
    assert frames.different_content_in_one_frame(a, b, frames.FRAME_CHECK_BELOW) is None
    assert frames.different_content_in_one_frame(None, b, 0.4) is None


def test_compare_and_duplicates_turn_a_shared_frame_down() -> None:
    a, b = pair(shared=24)
    vector = np.zeros(CHANNELS, np.float32)
    vector[0] = 1.0
    at_045 = np.zeros(CHANNELS, np.float32)
    at_045[:2] = (0.45, np.sqrt(1 - 0.45**2))
    first, second = fingerprint("a", a, vector), fingerprint("b", b, at_045)
    result = compare(first, second)
    assert (result["verdict"], result["tier"]) == ("similar", "descriptor")
    assert result["similarity"] == pytest.approx(0.45, abs=1e-6)
    assert result["shared_frame"]["area"] == pytest.approx(24 / CELLS, abs=1e-4)
    assert group_duplicates([first, second]) == []
    # Without the cells (a fingerprint model that gives none) the descriptor decides alone.
    bare = [fingerprint("a", None, vector), fingerprint("b", None, at_045)]
    assert compare(*bare)["verdict"] == "near_duplicate"
    assert compare(*bare)["shared_frame"] is None
    assert [g["indices"] for g in group_duplicates(bare)] == [[0, 1]]


def test_the_cells_of_the_copy_model_pool_back_to_its_descriptor(registry: ModelRegistry) -> None:
    model = registry.for_role(FINGERPRINT_ROLE)
    assert model.region_space is not None
    batch = np.stack([model.preprocess(sample_photo(n)) for n in ("chelsea", "coffee")])
    outputs = model.predict(batch)
    assert outputs[REGIONS].shape == (2, CELLS, model.dimensions)
    for row in range(2):
        union = model.region_space.describe(outputs[REGIONS][row].astype(np.float16))
        assert float(union @ outputs[EMBEDDING][row]) > 0.9999
