"""Both bundled embedding models side by side: copies of one photo vs look-alikes vs other photos.

For each model (dupify-visual-1 and dupify-semantic-1) every photo (scikit-image's samples plus
scikit-learn's `china` and `flower`) is encoded as PNG and altered by
`tests/samples.py::altered_copies` (the copies the tests use: resized 50%, cropped to the central
80%, JPEG quality 30, a large TrueType watermark, mirrored), then decoded with `decode_image` at
the model's working side, preprocessed and embedded exactly as the API does. The script prints:

- near duplicates: the lowest cosine of each kind of copy to its photo, over all photos;
- different photos: the highest cosine between two different photos (and its 99th percentile);
- the margin: lowest copy cosine minus highest different-photo cosine (positive = one threshold
  separates copies from other photos);
- look-alikes ("similar things", not copies): pairs the bundled data offers, each with its cosine
  and the rank of the look-alike among all other photos when the first image is the query
  (1 = it is the nearest neighbour).

    .venv/bin/python bench/model_behaviour.py [--markdown]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from dupify.config import ImageLimits, InferenceSettings
from dupify.images.decoding import decode_image
from dupify.inference.models.base import ImageModel
from dupify.inference.registry import load_default_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.samples import altered_copies, encode, sample_photo, sample_photos

NEAR_COPIES = ("resized_50", "cropped_80", "jpeg_q30", "watermarked", "flipped")
BATCH = 16
Pixels = npt.NDArray[np.uint8]


def crop(rgb: Pixels, left: float, top: float, right: float, bottom: float) -> Pixels:
    """A region given as fractions of the width and height."""
    height, width = rgb.shape[:2]
    return np.ascontiguousarray(
        rgb[
            round(top * height) : round(bottom * height), round(left * width) : round(right * width)
        ]
    )


@dataclass(frozen=True)
class LookAlike:
    """Two images of the same kind of thing that are not copies of one another."""

    name: str
    first: Callable[[], Pixels]
    second: Callable[[], Pixels]
    sources: tuple[str, ...]  # sample photos the pair is cut from: left out of its ranking


# What the bundled photos offer as "similar things": the same subject from another viewpoint,
# a close-up of a subject against its full photo, two halves of one scene, and same-material
# textures. None of these is an edit of the other image that a duplicate check should flag.
LOOK_ALIKES = (
    LookAlike(
        "motorcycle: left vs right stereo view",
        lambda: sample_photo("motorcycle_left"),
        lambda: np.ascontiguousarray(_right_motorcycle()),
        ("motorcycle_left",),
    ),
    LookAlike(
        "cat: head close-up vs whole photo",
        lambda: crop(sample_photo("chelsea"), 0.25, 0.0, 0.75, 0.6),
        lambda: sample_photo("chelsea"),
        ("chelsea",),
    ),
    LookAlike(
        "coffee: cup close-up vs whole photo",
        lambda: crop(sample_photo("coffee"), 0.15, 0.1, 0.75, 0.75),
        lambda: sample_photo("coffee"),
        ("coffee",),
    ),
    LookAlike(
        "temple: left half vs right half",
        lambda: crop(sample_photo("china"), 0.0, 0.0, 0.5, 1.0),
        lambda: crop(sample_photo("china"), 0.5, 0.0, 1.0, 1.0),
        ("china",),
    ),
    LookAlike(
        "flower: left half vs right half",
        lambda: crop(sample_photo("flower"), 0.0, 0.0, 0.5, 1.0),
        lambda: crop(sample_photo("flower"), 0.5, 0.0, 1.0, 1.0),
        ("flower",),
    ),
    LookAlike(
        "textures: gravel vs brick",
        lambda: sample_photo("gravel"),
        lambda: sample_photo("brick"),
        ("gravel", "brick"),
    ),
)


def _right_motorcycle() -> Pixels:
    from skimage import data

    return np.asarray(data.stereo_motorcycle()[1], dtype=np.uint8)[..., :3]


def embed_files(model: ImageModel, files: list[bytes]) -> npt.NDArray[np.float32]:
    """Decode, preprocess and embed encoded images through the same steps as the API."""
    limits = ImageLimits()
    tensors = np.stack(
        [model.preprocess(decode_image(data, limits, model.working_side).pixels) for data in files]
    )
    return np.concatenate(
        [model.predict(tensors[i : i + BATCH])["embedding"] for i in range(0, len(tensors), BATCH)]
    )


@dataclass
class Behaviour:
    model: str
    copy_lowest: dict[str, tuple[float, str]]
    different_highest: tuple[float, str]
    different_p99: float
    look_alikes: dict[str, tuple[float, int]]
    kinds: dict[str, tuple[float, float, float]]  # set -> (1-NN same kind, mean same, mean other)

    @property
    def margin(self) -> float:
        return min(value for value, _ in self.copy_lowest.values()) - self.different_highest[0]


def measure(model: ImageModel, photos: list[tuple[str, Pixels]]) -> Behaviour:
    names = [name for name, _ in photos]
    files = [encode(rgb, "PNG") for _, rgb in photos]
    copies = [altered_copies(rgb) for _, rgb in photos]
    for variant in NEAR_COPIES:
        files.extend(copy[variant] for copy in copies)
    embeddings = embed_files(model, files)
    count = len(photos)
    originals = embeddings[:count]

    copy_lowest: dict[str, tuple[float, str]] = {}
    for offset, variant in enumerate(NEAR_COPIES, start=1):
        block = embeddings[offset * count : (offset + 1) * count]
        cosines = np.sum(block * originals, axis=1)
        worst = int(np.argmin(cosines))
        copy_lowest[variant] = (float(cosines[worst]), names[worst])

    pairs = [
        (float(originals[i] @ originals[j]), f"{names[i]} / {names[j]}")
        for i, j in itertools.combinations(range(count), 2)
    ]
    highest = max(pairs)
    p99 = float(np.percentile([value for value, _ in pairs], 99))

    look_alikes: dict[str, tuple[float, int]] = {}
    for pair in LOOK_ALIKES:
        first, second = embed_files(
            model, [encode(pair.first(), "PNG"), encode(pair.second(), "PNG")]
        )
        similarity = float(first @ second)
        # Rank among the other photos: how many distinct photos sit closer to the query than
        # its look-alike (photos the pair was cut from are left out of the competition).
        others = [originals[i] for i, name in enumerate(names) if name not in pair.sources]
        rank = 1 + sum(1 for other in others if float(first @ other) > similarity)
        look_alikes[pair.name] = (similarity, rank)
    kinds = {
        name: kind_retrieval(model, images, labels) for name, (images, labels) in KINDS.items()
    }
    return Behaviour(model.id, copy_lowest, highest, p99, look_alikes, kinds)


def _lfw() -> tuple[list[Pixels], npt.NDArray[np.int64]]:
    from skimage import data

    faces = data.lfw_subset()  # 100 faces then 100 non-faces, 25x25 grey in [0, 1]
    return [_grey_to_rgb(face) for face in faces], np.repeat(np.arange(2), 100)


def _digits() -> tuple[list[Pixels], npt.NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 8x8 grey in 0..16
    return [_grey_to_rgb(image / 16.0) for image in digits.images[:300]], digits.target[:300]


def _grey_to_rgb(image: npt.NDArray[np.float64]) -> Pixels:
    grey = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))


# Small labelled sets bundled with the test dependencies: many different images of a few kinds.
KINDS: dict[str, tuple[list[Pixels], npt.NDArray[np.int64]]] = {}


def kind_retrieval(
    model: ImageModel, images: list[Pixels], labels: npt.NDArray[np.int64]
) -> tuple[float, float, float]:
    """How often an image's nearest other image is of its kind; mean cosine same / other kind."""
    tensors = np.stack([model.preprocess(image) for image in images])
    embeddings = np.concatenate(
        [model.predict(tensors[i : i + BATCH])["embedding"] for i in range(0, len(tensors), BATCH)]
    )
    similarity = embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    other = labels[:, None] != labels[None, :]
    np.fill_diagonal(similarity, -2.0)
    nearest = similarity.argmax(axis=1)
    hit_rate = float(np.mean(labels[nearest] == labels))
    return hit_rate, float(similarity[same].mean()), float(similarity[other].mean())


def render(results: list[Behaviour], markdown: bool, photos: int) -> None:
    header = ["", *(result.model for result in results)]
    rows: list[list[str]] = []
    for variant in NEAR_COPIES:
        rows.append(
            [
                f"copy: {variant}, lowest cosine",
                *(
                    f"{r.copy_lowest[variant][0]:.3f} ({r.copy_lowest[variant][1]})"
                    for r in results
                ),
            ]
        )
    rows.append(
        [
            "different photos, highest cosine",
            *(f"{r.different_highest[0]:.3f} ({r.different_highest[1]})" for r in results),
        ]
    )
    rows.append(["different photos, 99th percentile", *(f"{r.different_p99:.3f}" for r in results)])
    rows.append(
        ["margin (lowest copy - highest different)", *(f"{r.margin:+.3f}" for r in results)]
    )
    for pair in LOOK_ALIKES:
        rows.append(
            [
                f"look-alike: {pair.name} (cosine, rank)",
                *(
                    f"{r.look_alikes[pair.name][0]:.3f}, #{r.look_alikes[pair.name][1]}"
                    for r in results
                ),
            ]
        )
    for name in KINDS:
        rows.append(
            [
                f"kinds: {name} (nearest is same kind; mean cosine same / other)",
                *(
                    f"{r.kinds[name][0]:.1%}; {r.kinds[name][1]:.3f} / {r.kinds[name][2]:.3f}"
                    for r in results
                ),
            ]
        )
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    table = Table(title=f"Embedding behaviour on {photos} real photos")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    photos = sample_photos()
    KINDS["LFW faces vs non-faces, 200 x 25 px"] = _lfw()
    KINDS["handwritten digits 0-9, 300 x 8 px"] = _digits()
    models = load_default_models(InferenceSettings(intra_op_threads=args.threads))
    render([measure(model, photos) for model in models], args.markdown, len(photos))


if __name__ == "__main__":
    main()
