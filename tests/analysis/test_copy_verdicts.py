"""The duplicate verdicts on real photos through the real pipeline (dupify-copy-1 fingerprints):
flipped and quarter-turned copies are copies; different photos in one screenshot frame are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dupify.analysis.similarity import Fingerprint, compare, group_duplicates
from dupify.inference.registry import FINGERPRINT_ROLE, ModelRegistry
from dupify.pipeline.pipeline import Pipeline
from support.samples import encode, sample_photo

NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left")
TIERS = {"exact_bytes", "exact_pixels", "perceptual_hash", "descriptor"}


def in_screenshot(rgb: np.ndarray) -> np.ndarray:
    """A phone-style page drawn with Pillow (status bar, title, text lines, buttons) with the
    photo shrunk into its middle: what AugLy's screenshot overlay does with its templates."""
    page = Image.new("RGB", (540, 960), (245, 245, 245))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 540, 48), fill=(30, 30, 30))
    draw.rectangle((0, 48, 540, 140), fill=(59, 89, 152))
    draw.text((24, 80), "Photos shared with you", fill=(255, 255, 255))
    for row in range(6):
        top = 700 + row * 34
        draw.rectangle((24, top, 24 + 420 - 40 * (row % 3), top + 14), fill=(200, 200, 200))
    for left in (24, 196, 368):
        draw.rounded_rectangle((left, 900, left + 148, 944), radius=12, fill=(59, 89, 152))
    photo = Image.fromarray(rgb).resize((492, 520), Image.Resampling.BILINEAR)
    page.paste(photo, (24, 160))
    return np.asarray(page)


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


@pytest.mark.xfail(
    strict=True,
    reason="known gap of dupify-copy-1 at the 0.31 threshold: different photos in one drawn "
    "frame reach cosine 0.36-0.56 (median 0.41), above the frame's copies of their own photo "
    "(0.36-0.41); needs region-level matching in the verdict (see docs/quality.md)",
)
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
    assert group_duplicates(prints) == []
    # ...while each framed photo is still a copy of its photo.
    originals = await prints_of(pipeline, [encode(sample_photo(n), "PNG") for n in NAMES])
    for name, original, shot in zip(NAMES, originals, prints, strict=True):
        assert compare(original, shot)["verdict"] == "near_duplicate", name
