"""Check the duplicate thresholds on clean alterations: real photos and altered copies through
the real pipeline. (The shipped thresholds are calibrated for the fingerprint model,
dupify-copy-1, on the copy-detection benchmark, `make bench-quality`; this is the second check,
on the tests' own alterations of scikit-image's photos.)

Each photo (scikit-image's samples, plus scikit-learn's `china` and `flower` when installed) is
encoded as PNG, and its altered copies are made by `tests/samples.py::altered_copies` (the same
copies the tests use): PNG and lossless WebP (same pixels), resized 50%, cropped to the central
80%, JPEG quality 30, a large TrueType watermark, and a mirror image. Every file goes through
`decode_image` at the model's working side and the model, exactly as the API does. The script
prints the distributions (lowest near-duplicate cosine per alteration, highest cosine between
different photos, hash distances), the middle of each gap, the thresholds with their margins,
and checks every verdict of `compare` and `group_duplicates`.

    .venv/bin/python bench/calibrate_duplicates.py                            # dupify-copy-1
    .venv/bin/python bench/calibrate_duplicates.py --model dupify-visual-1    # for comparison

For dupify-copy-1 the checks use the thresholds in `similarity.py` (exit status 1 if any
pair is misjudged); the shipped thresholds are calibrated for that model only, so for another
model the checks use a near-duplicate threshold at the middle of its own measured gap and a
`similar` threshold at the 99th percentile of its different-photo cosines.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from dupify.analysis.hashes import dhash, hamming, phash, sha256_hex
from dupify.analysis.similarity import (
    DEFAULT_THRESHOLDS,
    DIFFERENT,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    SIMILAR,
    DuplicateThresholds,
    Fingerprint,
    compare,
    group_duplicates,
)
from dupify.config import ImageLimits, InferenceSettings
from dupify.images.decoding import decode_image
from dupify.inference.models.base import EMBEDDING, ImageModel
from dupify.inference.registry import load_default_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.samples import altered_copies, encode, sample_photos

CALIBRATED_MODEL = "dupify-copy-1"  # the fingerprint model, which DEFAULT_THRESHOLDS are for
SAME_PIXELS = ("png", "webp_lossless")
HASH_TIER = ("resized_50", "jpeg_q30", "watermarked")  # the copies pHash is meant to catch
BATCH = 16


@dataclass
class Item:
    photo: str
    variant: str
    fingerprint: Fingerprint
    mirrored: np.ndarray  # the embedding averaged with its mirror image's, renormalised


def embed(model: ImageModel, images: list[np.ndarray]) -> np.ndarray:
    tensors = np.stack([model.preprocess(np.ascontiguousarray(image)) for image in images])
    rows = [model.predict(tensors[i : i + BATCH])[EMBEDDING] for i in range(0, len(tensors), BATCH)]
    return np.concatenate(rows).astype(np.float32)


def fingerprint_all(model: ImageModel, files: list[tuple[str, str, bytes]]) -> list[Item]:
    limits = ImageLimits()
    decoded = [decode_image(data, limits, model.working_side) for _, _, data in files]
    embeddings = embed(model, [image.pixels for image in decoded])
    averaged = embeddings + embed(model, [image.pixels[:, ::-1] for image in decoded])
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True)
    return [
        Item(
            photo,
            variant,
            Fingerprint(
                sha256=sha256_hex(data),
                pixel_sha256=image.pixel_sha256,
                phash=phash(image.pixels),
                dhash=dhash(image.pixels),
                embedding=embedding,
            ),
            mean,
        )
        for (photo, variant, data), image, embedding, mean in zip(
            files, decoded, embeddings, averaged, strict=True
        )
    ]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=CALIBRATED_MODEL, help="a bundled model id")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    console = Console(width=132)  # wide enough for the tables when piped to a file
    settings = InferenceSettings(intra_op_threads=args.threads)
    [model] = load_default_models(settings, only=[args.model])

    files: list[tuple[str, str, bytes]] = []
    photos = sample_photos()
    for name, rgb in photos:
        files.append((name, "original", encode(rgb, "PNG")))
        files.extend((name, variant, data) for variant, data in altered_copies(rgb).items())
    items = fingerprint_all(model, files)
    originals = {item.photo: item for item in items if item.variant == "original"}
    copies = [item for item in items if item.variant != "original"]
    variants = sorted({item.variant for item in copies})

    # Copies against their own photo.
    pairs_of = {
        variant: [(originals[item.photo], item) for item in copies if item.variant == variant]
        for variant in variants
    }
    stats = {}
    for variant, pairs in pairs_of.items():
        stats[variant] = {
            "cosine": [cosine(a.fingerprint.embedding, b.fingerprint.embedding) for a, b in pairs],
            "mirrored": [cosine(a.mirrored, b.mirrored) for a, b in pairs],
            "phash": [hamming(a.fingerprint.phash, b.fingerprint.phash) for a, b in pairs],
            "dhash": [hamming(a.fingerprint.dhash, b.fingerprint.dhash) for a, b in pairs],
        }
    near = [v for v in variants if v not in SAME_PIXELS]
    near_lowest = min(min(stats[v]["cosine"]) for v in near)
    near_lowest_mirror = min(min(stats[v]["mirrored"]) for v in near)
    hash_tier_max = {h: max(max(stats[v][h]) for v in HASH_TIER) for h in ("phash", "dhash")}

    # Different photos: every file of one photo against every file of another.
    others = [(a, b) for a, b in itertools.combinations(items, 2) if a.photo != b.photo]
    different = [cosine(a.fingerprint.embedding, b.fingerprint.embedding) for a, b in others]
    different_mirror = [cosine(a.mirrored, b.mirrored) for a, b in others]
    phash_gaps = [hamming(a.fingerprint.phash, b.fingerprint.phash) for a, b in others]
    dhash_gaps = [hamming(a.fingerprint.dhash, b.fingerprint.dhash) for a, b in others]
    both_gaps = [max(p, d) for p, d in zip(phash_gaps, dhash_gaps, strict=True)]
    highest = max(different)
    worst = others[int(np.argmax(different))]
    percentile_99 = float(np.percentile(different, 99))
    middle = (highest + near_lowest) / 2

    if args.model == CALIBRATED_MODEL:
        t, source = DEFAULT_THRESHOLDS, "similarity.py"
    else:
        near_threshold = round(middle, 2)
        t = DuplicateThresholds(
            near_duplicate=near_threshold, similar=min(near_threshold, round(percentile_99, 2))
        )
        source = "derived here (middle of the gap)"

    wrong: list[str] = []
    table = Table(title=f"Copies vs their photo ({len(photos)} photos, {model.id})")
    for column in ("copy", "lowest cosine (photo)", "median", "mirror-avg lowest"):
        table.add_column(column, justify="right")
    for column in ("pHash max", "dHash max", "verdicts"):
        table.add_column(column, justify="right")
    for variant, pairs in pairs_of.items():
        expected = EXACT_DUPLICATE if variant in SAME_PIXELS else NEAR_DUPLICATE
        verdicts = [compare(a.fingerprint, b.fingerprint, t)["verdict"] for a, b in pairs]
        wrong += [
            f"{a.photo} vs its {variant} copy: {verdict}"
            for (a, _), verdict in zip(pairs, verdicts, strict=True)
            if verdict != expected
        ]
        cosines = stats[variant]["cosine"]
        lowest = int(np.argmin(cosines))
        table.add_row(
            variant,
            f"{cosines[lowest]:.3f} ({pairs[lowest][0].photo})",
            f"{np.median(cosines):.3f}",
            f"{min(stats[variant]['mirrored']):.3f}",
            str(max(stats[variant]["phash"])),
            str(max(stats[variant]["dhash"])),
            f"{verdicts.count(expected)}/{len(verdicts)} {expected}",
        )
    console.print(table)
    # Different photos must never be duplicates; with the shipped thresholds they must be
    # `different` (API contract), while another model may rightly call some pairs `similar`.
    allowed = {DIFFERENT} if args.model == CALIBRATED_MODEL else {DIFFERENT, SIMILAR}
    similar_pairs = []
    for a, b in itertools.combinations(originals.values(), 2):
        verdict = compare(a.fingerprint, b.fingerprint, t)["verdict"]
        if verdict == SIMILAR:
            similar_pairs.append(f"{a.photo}/{b.photo}")
        if verdict not in allowed:
            wrong.append(f"{a.photo} vs {b.photo}: {verdict}")
    console.print(
        f"Pairs of different photos (originals) called similar: {len(similar_pairs)} of "
        f"{len(originals) * (len(originals) - 1) // 2} {' '.join(similar_pairs)}"
    )

    console.print(
        f"Different photos ({len(different)} pairs of files): highest cosine {highest:.3f} "
        f"({worst[0].photo}/{worst[0].variant} vs {worst[1].photo}/{worst[1].variant}), "
        f"99th percentile {percentile_99:.3f}, median {np.median(different):.3f}; "
        f"mirror-averaged highest {max(different_mirror):.3f}"
    )
    console.print(
        f"  hash distances between different photos: pHash >= {min(phash_gaps)}, "
        f"dHash >= {min(dhash_gaps)}, max(pHash, dHash) >= {min(both_gaps)}"
    )

    summary = Table(title=f"Thresholds ({source})")
    for column in ("", "measured gap", "middle of gap", "threshold", "margins"):
        summary.add_column(column, justify="right")
    summary.add_row(
        "near_duplicate (cosine)",
        f"{highest:.3f} .. {near_lowest:.3f}",
        f"{middle:.3f}",
        f"{t.near_duplicate:.2f}",
        f"{near_lowest - t.near_duplicate:+.3f} copies, {t.near_duplicate - highest:+.3f} others",
    )
    summary.add_row(
        "  with mirror averaging",
        f"{max(different_mirror):.3f} .. {near_lowest_mirror:.3f}",
        f"{(max(different_mirror) + near_lowest_mirror) / 2:.3f}",
        "not used",
        f"gap {near_lowest_mirror - max(different_mirror):+.3f} vs "
        f"{near_lowest - highest:+.3f} without",
    )
    summary.add_row(
        "similar (cosine)",
        f"99th pct of others {percentile_99:.3f}",
        "",
        f"{t.similar:.2f}",
        f"{t.similar - percentile_99:+.3f} over the 99th percentile",
    )
    for name, gaps in (("phash", phash_gaps), ("dhash", dhash_gaps)):
        limit = getattr(t, f"{name}_distance")
        summary.add_row(
            f"{name}_distance (bits)",
            f"{hash_tier_max[name]} .. {min(gaps)}",
            f"{(hash_tier_max[name] + min(gaps)) / 2:.1f}",
            str(limit),
            f"{limit - hash_tier_max[name]:+d} copies, {min(gaps) - limit:+d} others "
            f"(both: others >= {min(both_gaps)})",
        )
    console.print(summary)

    groups = group_duplicates([item.fingerprint for item in items], t)
    expected_groups = [
        [i for i, item in enumerate(items) if item.photo == name] for name, _ in photos
    ]
    found = sorted(group["indices"] for group in groups)
    agreement = "as expected" if found == expected_groups else "NOT one group per photo"
    console.print(
        f"group_duplicates over all {len(items)} files: {len(groups)} groups, {agreement}"
    )
    if found != expected_groups:
        wrong.append("groups do not match the photos")
    for line in wrong:
        console.print(f"[red]misjudged:[/red] {line}")
    console.print("OK: every verdict as expected" if not wrong else f"{len(wrong)} misjudged")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
