"""The duplicate verdicts on real photos through the real pipeline (dupify-copy-1 fingerprints):
flipped and quarter-turned copies are copies; different photos in one screenshot frame are not."""

from __future__ import annotations

import numpy as np
import pytest

from dupify.analysis.similarity import DEFAULT_THRESHOLDS, Fingerprint, compare, group_duplicates
from dupify.inference.registry import FINGERPRINT_ROLE, ModelRegistry
from dupify.pipeline.pipeline import Pipeline
from support.samples import encode, in_screenshot, sample_photo

NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left")
TIERS = {"exact_bytes", "exact_pixels", "perceptual_hash", "descriptor"}


async def prints_of(pipeline: Pipeline, files: list[bytes]) -> list[Fingerprint]:
    params = [f"file[{i}]" for i in range(len(files))]
    return await pipeline.fingerprints_all(files, params, account=None)


def test_the_fingerprint_model_is_the_copy_descriptor(registry: ModelRegistry) -> None:
    assert registry.for_role(FINGERPRINT_ROLE).id == "dupify-copy-1"


@pytest.mark.parametrize(
    "turn",
    [
        pytest.param(lambda p: p[:, ::-1], id="mirrored"),
        pytest.param(lambda p: np.rot90(p, 1), id="rotated 90"),
        pytest.param(lambda p: np.rot90(p, 3), id="rotated 270"),
        pytest.param(lambda p: np.rot90(p, 2), id="rotated 180"),
    ],
)
async def test_mirrored_and_turned_copies_are_judged_copies(
    pipeline: Pipeline, turn: object
) -> None:
    photos = [sample_photo(name) for name in NAMES]
    files = [encode(p, "PNG") for p in photos]
    files += [encode(np.ascontiguousarray(turn(p)), "JPEG", quality=90) for p in photos]  # type: ignore[operator]
    prints = await prints_of(pipeline, files)
    count = len(NAMES)
    for i, name in enumerate(NAMES):
        result = compare(prints[i], prints[count + i])
        assert (result["verdict"], result["tier"]) == ("near_duplicate", "descriptor"), (
            name,
            result,
        )
    groups = group_duplicates(prints)
    assert all(g["tier"] in TIERS for g in groups)
    for i in range(count):  # each copy is in its photo's group
        assert any({i, count + i} <= set(g["indices"]) for g in groups), NAMES[i]


async def test_different_photos_in_one_screenshot_frame_are_not_copies(
    pipeline: Pipeline,
) -> None:
    framed = [in_screenshot(sample_photo(name)) for name in NAMES]
    prints = await prints_of(pipeline, [encode(f, "JPEG", quality=90) for f in framed])
    for i in range(len(NAMES)):
        for j in range(i + 1, len(NAMES)):
            result = compare(prints[i], prints[j])
            assert result["verdict"] in ("different", "similar"), (NAMES[i], NAMES[j], result)
            assert result["tier"] == "descriptor"
            if result["similarity"] >= DEFAULT_THRESHOLDS.near_duplicate:  # the frame's doing
                assert result["shared_frame"] is not None, (NAMES[i], NAMES[j], result)
    assert group_duplicates(prints) == []
    # ...while each framed photo is still a copy of its photo.
    originals = await prints_of(pipeline, [encode(sample_photo(n), "PNG") for n in NAMES])
    for name, original, shot in zip(NAMES, originals, prints, strict=True):
        assert compare(original, shot)["verdict"] == "near_duplicate", name
