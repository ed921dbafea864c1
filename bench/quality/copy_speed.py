"""Model-alone throughput of dupify-copy-1 against dupify-visual-1, measured interleaved.

The issue bounds the copy descriptor's cost per image at 1.5 x the default model's on CPU. On
a shared machine absolute figures drift with whatever else runs, so the two models take turns
on the same preprocessed batches of 16 reference photos (one batch each, alternately, for
`--rounds` rounds); each model's img/s is its images over its own summed `predict` time, and
the ratio compares time per image. Preprocessing and decoding are left out (model alone).

    .venv/bin/python bench/quality/copy_speed.py                       # 2 threads, 20 rounds
    .venv/bin/python bench/quality/copy_speed.py --models dupify-visual-1 dupify-semantic-1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dupify.config import InferenceSettings
from dupify.inference.registry import load_default_models

HERE = Path(__file__).resolve().parent
BATCH = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", nargs=2, default=["dupify-visual-1", "dupify-copy-1"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    settings = InferenceSettings(intra_op_threads=args.threads)
    loaded = {m.id: m for m in load_default_models(settings, only=args.models)}
    models = [loaded[model_id] for model_id in args.models]
    paths = sorted((HERE / "photos" / "reference").glob("*.jpg"))[: BATCH * 4]
    pixels = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    batches = {
        m.id: [
            np.stack([m.preprocess(p) for p in pixels[i : i + BATCH]])
            for i in range(0, len(pixels), BATCH)
        ]
        for m in models
    }
    for m in models:  # warm-up: first runs allocate
        m.predict(batches[m.id][0])
    seconds = dict.fromkeys(args.models, 0.0)
    images = dict.fromkeys(args.models, 0)
    for round_ in range(args.rounds):
        for m in models if round_ % 2 == 0 else models[::-1]:
            batch = batches[m.id][round_ % len(batches[m.id])]
            start = time.perf_counter()
            m.predict(batch)
            seconds[m.id] += time.perf_counter() - start
            images[m.id] += len(batch)
    rates = {model_id: images[model_id] / seconds[model_id] for model_id in args.models}
    for model_id, rate in rates.items():
        print(f"{model_id}: {rate:.1f} img/s at batch {BATCH} ({args.threads} threads)")
    first, second = args.models
    print(f"cost per image, {second} / {first}: {rates[first] / rates[second]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
