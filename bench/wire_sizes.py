"""What should cross the wire to a GPU worker: bytes per image and encode time of each choice,
for both bundled models, on real photos (the measurement behind inference/wire.py).

    .venv/bin/python bench/wire_sizes.py [--photos 16]

Choices: the upload's original bytes (JPEG q90 and PNG of the same photo), the decoded pixels
at the model's working side (uint8, deflated), and the model's input tensor (float32: raw, and
byte-shuffled then deflated, which is what the wire carries). Sizes are base64, as in a job.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from dupify.config import ImageLimits
from dupify.images.decoding import decode_image
from dupify.inference.models import semantic, visual
from dupify.inference.wire import RAW, SHUFFLED, encode_job

PREPROCESS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    visual.VisualModel.id: (visual.preprocess, visual.RESIZE_SIDE),
    semantic.SemanticModel.id: (semantic.preprocess, semantic.RESIZE_SIDE),
}


def photos(limit: int) -> list[np.ndarray]:
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field"]
    names += ["immunohistochemistry", "motorcycle_left", "retina", "colorwheel", "logo"]
    names += ["camera", "coins", "moon", "page", "text"]
    found = []
    for name in names[:limit]:
        pixels = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        found.append(np.ascontiguousarray(pixels[..., :3], dtype=np.uint8))
    return found


def b64_len(data: bytes) -> int:
    return len(base64.b64encode(data))


def timed(fn: Callable[[], bytes | str]) -> tuple[int, float]:
    started = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - started
    size = len(out) if isinstance(out, str) else b64_len(out)
    return size, elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    args = parser.parse_args()
    import io

    from PIL import Image

    table = Table(title="bytes per image in a job (base64), median over photos; encode ms")
    for column in ("model", "what crosses", "KB / image", "encode ms", "images per 20 MB job"):
        table.add_column(column, justify="right" if column != "what crosses" else "left")
    for model_id, (preprocess, side) in PREPROCESS.items():
        rows: dict[str, list[tuple[int, float]]] = {}
        for rgb in photos(args.photos):
            for fmt, options in (("JPEG", {"quality": 90}), ("PNG", {})):
                buffer = io.BytesIO()
                Image.fromarray(rgb).save(buffer, format=fmt, **options)
                rows.setdefault(f"original bytes ({fmt})", []).append(
                    (b64_len(buffer.getvalue()), 0.0)
                )
            upload = io.BytesIO()
            Image.fromarray(rgb).save(upload, format="PNG")
            pixels = decode_image(upload.getvalue(), ImageLimits(), side).pixels
            rows.setdefault("decoded pixels at the working side, deflated", []).append(
                timed(lambda p=pixels: zlib.compress(p.tobytes(), 1))
            )
            tensor = preprocess(pixels)
            rows.setdefault("tensor, raw float32", []).append(
                timed(lambda t=tensor, m=model_id: str(encode_job(m, [t], RAW)["data"]))
            )
            rows.setdefault("tensor, shuffled + deflated (the wire)", []).append(
                timed(lambda t=tensor, m=model_id: str(encode_job(m, [t], SHUFFLED)["data"]))
            )
        for what, samples in rows.items():
            size = statistics.median(s for s, _ in samples)
            ms = statistics.median(m for _, m in samples)
            table.add_row(
                model_id,
                what,
                f"{size / 1024:.0f}",
                f"{ms:.1f}" if ms else "-",
                f"{int(19_000_000 // size)}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
