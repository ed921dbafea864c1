"""Calibrate the duplicate thresholds: real photos and altered copies through the real pipeline.

Each photo (scikit-image's samples, plus scikit-learn's `china` and `flower` when installed) is
encoded as PNG, and its altered copies are made by `tests/samples.py::altered_copies` (the same
copies the tests use): PNG and lossless WebP (same pixels), resized 50%, cropped to the central
80%, JPEG quality 30, a large TrueType watermark, and a mirror image. Every file goes through
`decode_image` at the model's working side and dupify-visual-1, exactly as the API does. The
script prints the distributions (lowest near-duplicate cosine per alteration, highest cosine
between different photos, hash distances), the thresholds it would choose (the middle of each
gap), the thresholds in `similarity.py` with their margins, and checks every verdict.

    .venv/bin/python bench/calibrate_duplicates.py

Exit status 1 when the thresholds in `similarity.py` misjudge any measured pair.
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

from dupify.config import ImageLimits
from dupify.images.decode import decode_image
from dupify.vision.analysis.hashes import dhash, hamming, phash, sha256_hex
from dupify.vision.analysis.similarity import (
    DEFAULT_THRESHOLDS,
    DIFFERENT,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    Fingerprint,
    compare,
    group_duplicates,
)
from dupify.vision.models.visual import VisualModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from samples import altered_copies, encode, sample_photos

SAME_PIXELS = ("png", "webp_lossless")
BATCH = 16


@dataclass
class Item:
    photo: str
    variant: str
    fingerprint: Fingerprint
    mirrored: np.ndarray  # the embedding averaged with its mirror image's, renormalised


def fingerprint_all(model: VisualModel, files: list[tuple[str, str, bytes]]) -> list[Item]:
    limits = ImageLimits()
    decoded = [decode_image(data, limits, model.working_side) for _, _, data in files]
    tensors = np.stack([model.preprocess(image.pixels) for image in decoded])
    flipped = np.stack(
        [model.preprocess(np.ascontiguousarray(image.pixels[:, ::-1])) for image in decoded]
    )
    embeddings = np.concatenate(
        [model.predict(tensors[i : i + BATCH]).embeddings for i in range(0, len(tensors), BATCH)]
    )
    mirror = np.concatenate(
        [model.predict(flipped[i : i + BATCH]).embeddings for i in range(0, len(flipped), BATCH)]
    )
    averaged = embeddings + mirror
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True)
    items = []
    for (photo, variant, data), image, embedding, mean in zip(
        files, decoded, embeddings, averaged, strict=True
    ):
        fingerprint = Fingerprint(
            sha256=sha256_hex(data),
            pixel_sha256=image.pixel_sha256,
            phash=phash(image.pixels),
            dhash=dhash(image.pixels),
            embedding=embedding,
        )
        items.append(Item(photo, variant, fingerprint, mean))
    return items


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    console = Console(width=132)  # wide enough for the tables when piped to a file
    model = VisualModel(device="cpu", intra_op_threads=args.threads)

    files: list[tuple[str, str, bytes]] = []
    photos = sample_photos()
    for name, rgb in photos:
        files.append((name, "original", encode(rgb, "PNG")))
        files.extend((name, variant, data) for variant, data in altered_copies(rgb).items())
    items = fingerprint_all(model, files)
    originals = {item.photo: item for item in items if item.variant == "original"}
    copies = [item for item in items if item.variant != "original"]
    variants = sorted({item.variant for item in copies})
    t = DEFAULT_THRESHOLDS

    table = Table(title=f"Copies vs their photo ({len(photos)} photos, {model.id})")
    for column in ("copy", "lowest cosine (photo)", "median", "mirror-avg lowest"):
        table.add_column(column, justify="right")
    for column in ("pHash max", "dHash max", "verdicts"):
        table.add_column(column, justify="right")
    near_lowest, near_lowest_mirror = 1.0, 1.0
    hash_tier_max = {"phash": 0, "dhash": 0}
    wrong: list[str] = []
    for variant in variants:
        pairs = [(originals[item.photo], item) for item in copies if item.variant == variant]
        cosines = [cosine(a.fingerprint.embedding, b.fingerprint.embedding) for a, b in pairs]
        mirrored = [cosine(a.mirrored, b.mirrored) for a, b in pairs]
        p = [hamming(a.fingerprint.phash, b.fingerprint.phash) for a, b in pairs]
        d = [hamming(a.fingerprint.dhash, b.fingerprint.dhash) for a, b in pairs]
        expected = EXACT_DUPLICATE if variant in SAME_PIXELS else NEAR_DUPLICATE
        verdicts = [compare(a.fingerprint, b.fingerprint)["verdict"] for a, b in pairs]
        wrong += [
            f"{a.photo} vs {variant}: {v}"
            for (a, _), v in zip(pairs, verdicts, strict=True)
            if v != expected
        ]
        lowest = int(np.argmin(cosines))
        table.add_row(
            variant,
            f"{cosines[lowest]:.3f} ({pairs[lowest][0].photo})",
            f"{np.median(cosines):.3f}",
            f"{min(mirrored):.3f}",
            str(max(p)),
            str(max(d)),
            f"{verdicts.count(expected)}/{len(verdicts)} {expected}",
        )
        if variant not in SAME_PIXELS:
            near_lowest = min(near_lowest, min(cosines))
            near_lowest_mirror = min(near_lowest_mirror, min(mirrored))
        if variant in ("resized_50", "jpeg_q30", "watermarked"):
            hash_tier_max["phash"] = max(hash_tier_max["phash"], max(p))
            hash_tier_max["dhash"] = max(hash_tier_max["dhash"], max(d))
    console.print(table)

    # Different photos: every file of one photo against every file of another.
    different, different_mirror, phash_gaps, dhash_gaps, both_gaps = [], [], [], [], []
    worst = ("", "", -1.0)
    for a, b in itertools.combinations(items, 2):
        if a.photo == b.photo:
            continue
        similarity = cosine(a.fingerprint.embedding, b.fingerprint.embedding)
        different.append(similarity)
        different_mirror.append(cosine(a.mirrored, b.mirrored))
        p = hamming(a.fingerprint.phash, b.fingerprint.phash)
        d = hamming(a.fingerprint.dhash, b.fingerprint.dhash)
        phash_gaps.append(p)
        dhash_gaps.append(d)
        both_gaps.append(max(p, d))
        if similarity > worst[2]:
            worst = (f"{a.photo}/{a.variant}", f"{b.photo}/{b.variant}", similarity)
        if a.variant == b.variant == "original":
            verdict = compare(a.fingerprint, b.fingerprint)["verdict"]
            if verdict != DIFFERENT:
                wrong.append(f"{a.photo} vs {b.photo}: {verdict}")
    highest = max(different)
    console.print(
        f"Different photos ({len(different)} pairs of files): highest cosine {highest:.3f} "
        f"({worst[0]} vs {worst[1]}), 99th percentile {np.percentile(different, 99):.3f}, "
        f"median {np.median(different):.3f}; mirror-averaged highest {max(different_mirror):.3f}"
    )
    console.print(
        f"  hash distances between different photos: pHash >= {min(phash_gaps)}, "
        f"dHash >= {min(dhash_gaps)}, max(pHash, dHash) >= {min(both_gaps)}"
    )

    summary = Table(title="Thresholds")
    for column in ("", "measured gap", "middle of gap", "in similarity.py", "margins"):
        summary.add_column(column, justify="right")
    summary.add_row(
        "near_duplicate (cosine)",
        f"{highest:.3f} .. {near_lowest:.3f}",
        f"{(highest + near_lowest) / 2:.3f}",
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
        f"99th pct of others {np.percentile(different, 99):.3f}",
        "",
        f"{t.similar:.2f}",
        f"{t.similar - np.percentile(different, 99):+.3f} over the 99th percentile",
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

    groups = group_duplicates([item.fingerprint for item in items])
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
