"""Fit dupify-copy-1's whitening on the background photos only, and write the array it ships.

The whitening is the inverse square root of the *edit covariance*: how a photo's pooled
stage-3 descriptor moves when the photo is edited. Fitted on `bench/quality/background/` (66
photos the benchmark never reads), never on the benchmark's references or distractors:

- each background photo, decoded as the API decodes it (`inspect_image` at the model's
  working side), gives one class made of: the photo itself; its 7 other dihedral variants
  (mirrored, upside down, quarter turns: the invariance the descriptor is meant to have,
  fitted explicitly); and `EDITS_PER_PHOTO` edited copies made by the benchmark's own AugLy
  edit mix (`copy_queries.edit_photo`, 1-3 edits each, saved as JPEG), seeded
  `fit:<photo stem>:<n>` (the benchmark's queries are seeded `<seed>:<kind>-<stem>-<n>`), the
  photos pasted under an "onto another photo" edit being other background photos;
- every image's descriptor: `CopyModel.pooled` (GeM p = 3 over the 16x16 stage-3 map of the
  whole image at 256x256, L2-normalised), in float64 from here on;
- mean: the mean descriptor over every image; edit covariance Cs: the covariance of each
  descriptor minus its class's mean; shrunk as (1 - SHRINK) Cs + SHRINK (trace(Cs) / 512) I
  (66 classes cannot pin down all 512 x 512 entries); projection: Cs^(-1/2), the symmetric
  inverse square root (eigen-decomposition; being symmetric it has no sign ambiguity).

Written to `src/dupify/inference/models/copy_whitening.npz` as float32 `mean` (512,) and
`projection` (512, 512), with fixed zip timestamps, so a rerun on the same machine writes the
same bytes (the ONNX Runtime build can move the last float bits between machines).

    .venv/bin/python bench/quality/fit_copy.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import io
import random
import time
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
from copy_queries import edit_photo, restore_removed_names
from PIL import Image

from dupify.config import ImageLimits
from dupify.inference.models.copy import CHANNELS, WHITENING_RESOURCE, CopyModel
from dupify.inference.session import SessionPolicy
from dupify.pipeline.pre import inspect_image

HERE = Path(__file__).resolve().parent
BACKGROUND = HERE / "background"
OUTPUT = HERE.parents[1] / "src" / "dupify" / "inference" / "models" / WHITENING_RESOURCE
EDITS_PER_PHOTO = 60
SHRINK = 0.05
BATCH = 16
Pixels = npt.NDArray[np.uint8]


def dihedral(pixels: Pixels) -> list[Pixels]:
    """The 8 dihedral variants of an image (itself first): 4 quarter turns, each mirrored."""
    turns = [np.rot90(pixels, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def decoded(data: bytes) -> Pixels:
    return inspect_image(data, ImageLimits(), CopyModel.working_side, frozenset()).image.pixels


def background_classes(edits: int) -> tuple[list[Pixels], npt.NDArray[np.int64]]:
    """Every fitting image's pixels and its class (the background photo it comes from)."""
    restore_removed_names()
    paths = sorted(BACKGROUND.glob("*.jpg"))
    photos = [Image.open(path).convert("RGB") for path in paths]
    images: list[Pixels] = []
    labels: list[int] = []
    for index, (path, photo) in enumerate(zip(paths, photos, strict=True)):
        others = [other for j, other in enumerate(photos) if j != index]
        members = dihedral(decoded(path.read_bytes()))
        for n in range(edits):
            data, _ = edit_photo(photo, random.Random(f"fit:{path.stem}:{n}"), others)
            members.append(decoded(data))
        images += members
        labels += [index] * len(members)
    return images, np.array(labels, dtype=np.int64)


def descriptors(images: list[Pixels]) -> npt.NDArray[np.float64]:
    """The unwhitened descriptors, in the server's batch size."""
    identity = (np.zeros(CHANNELS, np.float32), np.eye(CHANNELS, dtype=np.float32))
    model = CopyModel(SessionPolicy(device="cpu", intra_op_threads=0), whiten=identity)
    rows = []
    for first in range(0, len(images), BATCH):
        batch = np.stack([model.preprocess(p) for p in images[first : first + BATCH]])
        rows.append(model.pooled(batch))
    return np.concatenate(rows).astype(np.float64)


def fit(
    x: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], shrink: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(mean, Cs^(-1/2)) of the shrunk edit covariance."""
    classes = np.unique(labels)
    class_means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    deviations = x - class_means[np.searchsorted(classes, labels)]
    cs = deviations.T @ deviations / len(x)
    cs = (1.0 - shrink) * cs + shrink * np.trace(cs) / len(cs) * np.eye(len(cs))
    values, vectors = np.linalg.eigh(cs)
    return x.mean(axis=0), (vectors * values**-0.5) @ vectors.T


def write(path: Path, arrays: dict[str, npt.NDArray[np.float32]]) -> None:
    """An .npz (what `np.load` reads) whose bytes depend only on the arrays: fixed timestamps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=EDITS_PER_PHOTO, help="edited copies/photo")
    parser.add_argument("--shrink", type=float, default=SHRINK, help="towards the identity")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    started = time.perf_counter()
    images, labels = background_classes(args.edits)
    x = descriptors(images)
    mean, projection = fit(x, labels, args.shrink)
    write(
        args.output,
        {"mean": mean.astype(np.float32), "projection": projection.astype(np.float32)},
    )
    print(
        f"fitted on {len(images)} images of {len(np.unique(labels))} background photos "
        f"({args.edits} edits + 8 dihedral variants each, shrink {args.shrink}) in "
        f"{time.perf_counter() - started:.0f} s -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
