"""Pixel analysis (palette, hashes, quality, safety) and the tiered duplicate logic, the latter
with real dupify-copy-1 descriptors (the fingerprint model) of real photos and their copies."""

from __future__ import annotations

import hashlib
import itertools

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter

from dupify.analysis import similarity
from dupify.analysis.colors import (
    _assign,
    _weighted_samples,
    dominant_colors,
    lab_to_srgb,
    srgb_to_lab,
)
from dupify.analysis.hashes import dhash, hamming, phash, sha256_hex
from dupify.analysis.quality import measure_quality
from dupify.analysis.safety import safety_verdict
from dupify.analysis.similarity import (
    DEFAULT_THRESHOLDS,
    DuplicateThresholds,
    Fingerprint,
    compare,
    group_duplicates,
)
from dupify.errors import ApiError
from dupify.inference.backend import InferenceBackend
from dupify.inference.models.visual import NSFW
from dupify.inference.registry import ModelRegistry
from dupify.pipeline.pipeline import Pipeline
from support.samples import altered_copies, encode, sample_photo, sample_photos

MODEL = "dupify-visual-1"
NEAR_COPIES = ("resized_50", "cropped_80", "jpeg_q30", "watermarked", "flipped")


def blurred(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(sigma)))


def resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


# --- colours ---------------------------------------------------------------------------------


def test_two_colour_image_gives_two_colours_with_their_shares() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:70] = (255, 0, 0)
    image[70:] = (0, 0, 255)
    colors = dominant_colors(image)
    assert [color["hex"] for color in colors] == ["#ff0000", "#0000ff"]
    assert colors[0]["fraction"] == pytest.approx(0.7, abs=0.01)
    assert colors[1]["fraction"] == pytest.approx(0.3, abs=0.01)


def test_palette_is_sorted_sums_to_one_and_is_deterministic() -> None:
    coffee = sample_photo("coffee")
    colors = dominant_colors(coffee, count=5)
    assert 2 <= len(colors) <= 5
    fractions = [float(color["fraction"]) for color in colors]  # type: ignore[arg-type]
    assert fractions == sorted(fractions, reverse=True)
    assert sum(fractions) == pytest.approx(1.0)
    assert all(
        str(color["hex"]).startswith("#") and len(str(color["hex"])) == 7 for color in colors
    )
    assert dominant_colors(coffee, count=5) == colors
    assert len(dominant_colors(coffee, count=2)) <= 2


def test_near_identical_shades_merge_into_one_colour() -> None:
    image = np.full((60, 60, 3), 120, dtype=np.uint8)
    image[:, 30:] = 123  # Delta E ~1: nobody tells these apart
    colors = dominant_colors(image)
    assert len(colors) == 1
    assert colors[0]["fraction"] == pytest.approx(1.0)


def test_colours_are_the_visible_ones_not_rgb_box_averages() -> None:
    # Green, grey and a little orange: each must come back as itself, not blended.
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:50] = (30, 160, 60)
    image[50:90] = (128, 128, 128)
    image[90:] = (250, 140, 20)
    hexes = {str(color["hex"]) for color in dominant_colors(image)}
    assert hexes == {"#1ea03c", "#808080", "#fa8c14"}


def test_lab_conversion_round_trips_and_matches_reference_values() -> None:
    colours = np.random.default_rng(1).uniform(0, 255, (200, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(colours)) - colours).max() < 1e-6
    white, red = srgb_to_lab(np.array([[255.0, 255.0, 255.0], [255.0, 0.0, 0.0]]))
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert red == pytest.approx([53.24, 80.09, 67.20], abs=0.01)


def test_palette_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        dominant_colors(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="count"):
        dominant_colors(np.zeros((4, 4, 3), dtype=np.uint8), count=0)


def test_the_palettes_fast_steps_are_their_plain_numpy_definitions() -> None:
    """Issue 16: the cell sums by `bincount` and the nearest-centre search down the short axis
    give exactly what `np.unique` + `np.add.at` and a broadcast `argmin` give, ties included
    (the first of equal centres wins), so no palette changed."""
    rng = np.random.default_rng(16)
    few = rng.integers(0, 256, (3, 3), dtype=np.uint8)[rng.integers(0, 3, (40, 50))]
    for pixels in (rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), few):
        rgb, weights = _weighted_samples(pixels)
        flat = pixels.reshape(-1, 3)
        q = flat.astype(np.int64) >> 3
        cells = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
        occupied, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
        sums = np.zeros((len(occupied), 3))
        np.add.at(sums, inverse, flat.astype(np.float64))
        np.testing.assert_array_equal(rgb, sums / counts[:, None])
        np.testing.assert_array_equal(weights, counts)
    lab = rng.normal(0, 40, (500, 3)).round()  # whole numbers: many exact ties
    centres = np.concatenate([lab[:4], lab[:2]])  # repeated centres: ties on every sample
    plain = np.argmin(((lab[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(_assign(lab, centres), plain)


# --- hashes ----------------------------------------------------------------------------------


def test_sha256_hex_is_sha256_of_the_bytes() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera", "page"])
def test_hashes_equal_the_reference_implementation(name: str) -> None:
    rgb = sample_photo(name)
    image = Image.fromarray(rgb)
    assert phash(rgb) == str(imagehash.phash(image))
    assert dhash(rgb) == str(imagehash.dhash(image))


def test_hashes_survive_resizing_and_tell_photos_apart() -> None:
    photos = sample_photos(10)
    hashes = {}
    for name, rgb in photos:
        for factor in (0.5, 0.3):
            copy = resized(rgb, factor)
            assert hamming(phash(rgb), phash(copy)) <= 4, (name, factor)
            assert hamming(dhash(rgb), dhash(copy)) <= 6, (name, factor)
        hashes[name] = (phash(rgb), dhash(rgb))
    for (a, (pa, da)), (b, (pb, db)) in itertools.combinations(hashes.items(), 2):
        assert hamming(pa, pb) > 12, (a, b)
        assert hamming(da, db) > 12, (a, b)


def test_hash_format_and_hamming() -> None:
    value = phash(sample_photo("chelsea"))
    assert len(value) == 16 and int(value, 16) >= 0
    assert hamming("0" * 16, "f" * 16) == 64
    assert hamming("8000000000000001", "0000000000000000") == 2
    assert hamming(value, value) == 0
    with pytest.raises(ValueError, match="length"):
        hamming("00", "000")
    with pytest.raises(ValueError, match="hex"):
        hamming("zz", "00")


# --- quality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera", "rocket"])
def test_blurred_copy_scores_clearly_less_sharp(name: str) -> None:
    rgb = sample_photo(name)
    sharp = measure_quality(rgb)["sharpness"]
    soft = measure_quality(blurred(rgb, 1))["sharpness"]
    blurry = measure_quality(blurred(rgb, 2))["sharpness"]
    assert sharp > 0.75
    assert soft < 0.5 < sharp
    assert blurry < 0.15 < soft


def test_brightness_and_contrast_order_and_bounds() -> None:
    rgb = sample_photo("astronaut").astype(np.int16)
    normal = measure_quality(rgb.astype(np.uint8))
    darker = measure_quality((rgb * 0.5).astype(np.uint8))
    brighter = measure_quality(np.clip(rgb + 60, 0, 255).astype(np.uint8))
    flat = measure_quality((rgb * 0.3 + 90).astype(np.uint8))
    assert darker["brightness"] < normal["brightness"] < brighter["brightness"]
    assert flat["contrast"] < normal["contrast"]

    black = measure_quality(np.zeros((32, 32, 3), dtype=np.uint8))
    white = measure_quality(np.full((32, 32, 3), 255, dtype=np.uint8))
    assert black == {"sharpness": 0.0, "brightness": 0.0, "contrast": 0.0}
    assert white["brightness"] == pytest.approx(1.0)
    halves = np.zeros((32, 32, 3), dtype=np.uint8)
    halves[:, 16:] = 255
    assert measure_quality(halves)["contrast"] == pytest.approx(1.0)

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for image in (noise, halves, np.zeros((1, 1, 3), dtype=np.uint8)):
        assert all(0.0 <= value <= 1.0 for value in measure_quality(image).values())


# --- safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "verdict"),
    [
        (0.0, "safe"),
        (0.199, "safe"),
        (0.2, "questionable"),
        (0.5, "questionable"),
        (0.799, "questionable"),
        (0.8, "unsafe"),
        (1.0, "unsafe"),
    ],
)
def test_safety_thresholds(probability: float, verdict: str) -> None:
    assert safety_verdict(probability) == {"nsfw": probability, "verdict": verdict}


@pytest.mark.parametrize("probability", [-0.01, 1.01, float("nan"), float("inf")])
def test_safety_rejects_non_probabilities(probability: float) -> None:
    with pytest.raises(ValueError, match="within"):
        safety_verdict(probability)


async def test_bundled_sample_photos_are_safe(
    registry: ModelRegistry, backend: InferenceBackend
) -> None:
    names = ["chelsea", "coffee", "camera", "astronaut", "rocket"]
    rows = await backend.infer(MODEL, [sample_photo(n) for n in names])
    for name, row in zip(names, rows, strict=True):
        assert not isinstance(row, ApiError), name
        assert safety_verdict(float(row[NSFW]))["verdict"] == "safe", name


# --- duplicates: real photos through the real pipeline ---------------------------------------


async def fingerprints_of(pipeline: Pipeline, files: list[bytes]) -> list[Fingerprint]:
    """Fingerprints as the API makes them: the pipeline decodes at the model's working side,
    hashes and embeds."""
    params = [f"file[{i}]" for i in range(len(files))]
    fingerprints = await pipeline.fingerprints_all(files, params, account=None)
    assert {item.embedding.shape for item in fingerprints} == {(512,)}
    return fingerprints


@pytest.fixture(scope="module")
async def copies(pipeline: Pipeline) -> dict[str, dict[str, Fingerprint]]:
    """For 10 photos: the photo (PNG) and each altered copy, fingerprinted."""
    files: list[tuple[str, str, bytes]] = []
    for name, rgb in sample_photos(10):
        files.append((name, "original", encode(rgb, "PNG")))
        files.extend((name, kind, data) for kind, data in altered_copies(rgb).items())
    prints = await fingerprints_of(pipeline, [data for _, _, data in files])
    result: dict[str, dict[str, Fingerprint]] = {}
    for (name, kind, _), fingerprint in zip(files, prints, strict=True):
        result.setdefault(name, {})[kind] = fingerprint
    return result


@pytest.mark.parametrize("kind", NEAR_COPIES)
def test_altered_copies_are_near_duplicates(
    copies: dict[str, dict[str, Fingerprint]], kind: str
) -> None:
    for name, prints in copies.items():
        result = compare(prints["original"], prints[kind])
        assert (result["verdict"], result["tier"]) == ("near_duplicate", "descriptor"), (
            name,
            result,
        )
        assert DEFAULT_THRESHOLDS.near_duplicate <= result["similarity"] < 1.0


def test_same_pixels_in_png_and_lossless_webp_are_exact_duplicates(
    copies: dict[str, dict[str, Fingerprint]],
) -> None:
    for name, prints in copies.items():
        png, webp = prints["png"], prints["webp_lossless"]
        assert png.sha256 != webp.sha256  # different files: only the pixels are the same
        result = compare(png, webp)
        assert (result["verdict"], result["tier"]) == ("exact_duplicate", "exact_pixels"), name
        assert result["similarity"] == 1.0
        assert result["hash_distance"] == {"phash": 0, "dhash": 0}


def test_different_photos_are_different(copies: dict[str, dict[str, Fingerprint]]) -> None:
    chelsea, coffee = copies["chelsea"]["original"], copies["coffee"]["original"]
    result = compare(chelsea, coffee)
    assert result["verdict"] == "different"
    assert result["similarity"] < DEFAULT_THRESHOLDS.similar
    assert result["hash_distance"]["phash"] > DEFAULT_THRESHOLDS.phash_distance
    assert result["thresholds"] == DEFAULT_THRESHOLDS.as_dict()
    # No two different photos are duplicates (a pair may be `similar`: a weaker claim).
    for a, b in itertools.combinations(copies, 2):
        verdict = compare(copies[a]["original"], copies[b]["original"])["verdict"]
        assert verdict in ("different", "similar"), (a, b)


def test_ten_photos_with_two_copies_each_make_ten_groups(
    copies: dict[str, dict[str, Fingerprint]],
) -> None:
    files: list[tuple[str, Fingerprint]] = []
    for position, (name, prints) in enumerate(copies.items()):
        first, second = NEAR_COPIES[position % 5], NEAR_COPIES[(position + 2) % 5]
        files += [(name, prints["original"]), (name, prints[first]), (name, prints[second])]
    order = np.random.default_rng(7).permutation(len(files))  # copies not next to their photo
    shuffled = [files[i] for i in order]
    groups = group_duplicates([fingerprint for _, fingerprint in shuffled])
    assert len(groups) == 10
    expected = sorted(
        sorted(i for i, (other, _) in enumerate(shuffled) if other == name) for name in copies
    )
    assert sorted(group["indices"] for group in groups) == expected
    for group in groups:
        assert group["verdict"] == "near_duplicate"
        assert DEFAULT_THRESHOLDS.near_duplicate <= group["similarity"] < 1.0


def test_a_group_of_identical_pixels_is_an_exact_group(
    copies: dict[str, dict[str, Fingerprint]],
) -> None:
    chelsea, coffee = copies["chelsea"], copies["coffee"]
    prints = [chelsea["png"], coffee["original"], chelsea["webp_lossless"], chelsea["original"]]
    assert group_duplicates(prints) == [
        {
            "indices": [0, 2, 3],
            "verdict": "exact_duplicate",
            "tier": "exact_pixels",
            "similarity": 1.0,
        }
    ]
    same_file = group_duplicates([chelsea["png"], coffee["original"], chelsea["original"]])
    assert [(g["indices"], g["tier"]) for g in same_file] == [([0, 2], "exact_bytes")]
    mixed = group_duplicates([chelsea["png"], chelsea["webp_lossless"], chelsea["jpeg_q30"]])
    assert len(mixed) == 1 and mixed[0]["verdict"] == "near_duplicate"
    assert mixed[0]["similarity"] == pytest.approx(
        compare(chelsea["png"], chelsea["jpeg_q30"])["similarity"], abs=1e-5
    )


# --- duplicates: the rules on constructed fingerprints ---------------------------------------


def unit(vector: list[float]) -> np.ndarray:
    array = np.array(vector, dtype=np.float32)
    return array / np.linalg.norm(array)


def at_angle(similarity: float) -> np.ndarray:
    """A unit vector whose cosine to (1, 0) is `similarity`."""
    return unit([similarity, float(np.sqrt(1 - similarity**2))])


def made(index: int, embedding: np.ndarray, phash: str = "", dhash: str = "") -> Fingerprint:
    # Distinct hashes by default: `index` spread over the bits so no two are close.
    spread = f"{(0x9E3779B97F4A7C15 * (index + 1)) % 2**64:016x}"
    return Fingerprint(
        sha256=f"bytes-{index}",
        pixel_sha256="",
        phash=phash or spread,
        dhash=dhash or spread,
        embedding=embedding,
    )


T = DEFAULT_THRESHOLDS
NEAR = (T.near_duplicate + 1.0) / 2  # cosines in each band of the shipped thresholds
SIMILAR = (T.similar + T.near_duplicate) / 2
UNRELATED = T.similar / 2


def test_tiers_of_compare() -> None:
    base = made(0, unit([1.0, 0.0]))

    def decided(other: Fingerprint) -> tuple[str, str]:
        result = compare(base, other)
        return result["verdict"], result["tier"]

    assert decided(made(1, at_angle(NEAR))) == ("near_duplicate", "descriptor")
    assert decided(made(1, at_angle(SIMILAR))) == ("similar", "descriptor")
    assert decided(made(1, at_angle(UNRELATED))) == ("different", "descriptor")
    # Matching hashes promote a similar pair to near duplicate, but not an unrelated one:
    # near-uniform images share hashes without being copies.
    same_hashes = {"phash": base.phash, "dhash": base.dhash}
    assert decided(made(1, at_angle(SIMILAR), **same_hashes)) == (
        "near_duplicate",
        "perceptual_hash",
    )
    assert decided(made(1, at_angle(NEAR), **same_hashes)) == ("near_duplicate", "descriptor")
    assert decided(made(1, at_angle(UNRELATED), **same_hashes)) == ("different", "descriptor")
    # Unknown pixel hashes ("") never match each other; equal bytes always do.
    same_bytes = Fingerprint("bytes-0", "", "0" * 16, "0" * 16, at_angle(UNRELATED))
    assert decided(same_bytes) == ("exact_duplicate", "exact_bytes")
    same_pixels = Fingerprint("x", "p", "0" * 16, "0" * 16, at_angle(UNRELATED))
    other_pixels = Fingerprint("y", "p", "f" * 16, "f" * 16, at_angle(UNRELATED))
    result = compare(same_pixels, other_pixels)
    assert (result["verdict"], result["tier"]) == ("exact_duplicate", "exact_pixels")


def test_groups_are_transitive_and_leave_singletons_out() -> None:
    # a~b and b~c are near duplicates, a and c are not: one group, its similarity the a-c cosine.
    step = float(np.arccos(NEAR))  # a-b and b-c at cosine NEAR, a-c at twice the angle
    a, b, c = (unit([np.cos(k * step), np.sin(k * step), 0.0]) for k in (0, 1, 2))
    lonely = unit([0.0, 0.0, 1.0])
    prints = [made(0, a), made(1, lonely), made(2, b), made(3, c)]
    near = T.near_duplicate
    assert float(a @ b) > near and float(b @ c) > near and float(a @ c) < near
    groups = group_duplicates(prints)
    assert groups == [
        {
            "indices": [0, 2, 3],
            "verdict": "near_duplicate",
            "tier": "descriptor",
            "similarity": pytest.approx(a @ c),
        }
    ]
    # A link that only the hashes make gives its group the hash tier.
    similar_to_a = unit([SIMILAR, float(np.sqrt(1 - SIMILAR**2)), 0.0])
    hashed = [made(0, a), made(1, similar_to_a, phash=prints[0].phash, dhash=prints[0].dhash)]
    assert [g["tier"] for g in group_duplicates(hashed)] == ["perceptual_hash"]
    assert group_duplicates([]) == []
    assert group_duplicates(prints[:1]) == []
    assert group_duplicates([made(0, a), made(1, lonely)]) == []


def test_group_links_agree_with_compare_over_many_images(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks, so that pairs across block boundaries are exercised with 300 images.
    monkeypatch.setattr(similarity, "_BLOCK_ROWS", 64)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 256))  # 256-d: unrelated centres stay below the thresholds
    vectors = [unit(list(centres[i % 20] + rng.normal(scale=0.4, size=256))) for i in range(300)]
    prints = [made(i, vector) for i, vector in enumerate(vectors)]
    groups = group_duplicates(prints)
    assert len(groups) >= 15
    # Every member is linked (by compare) to at least one other member of its group, and no
    # two images in different groups (or ungrouped) are linked.
    where = {index: g for g, group in enumerate(groups) for index in group["indices"]}
    for i, j in itertools.combinations(range(len(prints)), 2):
        if compare(prints[i], prints[j])["verdict"] in ("near_duplicate", "exact_duplicate"):
            assert i in where and where.get(j) == where[i]


def test_thresholds_are_validated_and_reported() -> None:
    assert DEFAULT_THRESHOLDS.as_dict() == {
        "near_duplicate": 0.31,
        "similar": 0.22,
        "phash_distance": 10,
        "dhash_distance": 10,
    }
    with pytest.raises(ValueError, match="similar <= near_duplicate"):
        DuplicateThresholds(near_duplicate=0.5, similar=0.6)
    with pytest.raises(ValueError, match="phash_distance"):
        DuplicateThresholds(phash_distance=65)
    strict = DuplicateThresholds(near_duplicate=0.99, similar=0.9)
    base = made(0, unit([1.0, 0.0]))
    result = compare(base, made(1, at_angle(0.95)), strict)
    assert result["verdict"] == "similar"
    assert result["thresholds"]["near_duplicate"] == 0.99
