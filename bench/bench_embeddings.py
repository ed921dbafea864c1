"""Embedding throughput, one table from one run: the model alone, the in-process pipeline
(decode + preprocess + model) and HTTP end to end with concurrent clients, for 512 px and
12 MP JPEGs; plus /v1/analyze with its default features and a cache hit over HTTP. Medians of
repeated rounds; ratios against the model alone, measured alongside.

Every HTTP request carries distinct bytes (a numbered JPEG comment: same pixels), so the
24-hour result cache answers none of them except in the row that measures it; the server runs
with a plan generous enough that rate limits and quotas never answer either.

    make bench            # or: .venv/bin/python bench/bench_embeddings.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data as samples

from dupify.config import ImageLimits, InferenceSettings
from dupify.images.workers import Decoder
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from dupify.pipeline.pipeline import Pipeline, build_pipeline

MODEL = "dupify-visual-1"
SEMANTIC_MODEL = "dupify-semantic-1"  # the second bundled model, measured alone beside it
KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")
# The bench measures the pipeline, not a plan's requests per minute or images per month.
UNLIMITED_PLAN = {
    f"DUPIFY_PLANS__{plan}__{limit}": "1000000000"
    for plan in ("FREE", "PRO")
    for limit in ("REQUESTS_PER_MINUTE", "IMAGES_PER_MONTH")
}


def jpeg_of(size: tuple[int, int]) -> bytes:
    photo = Image.fromarray(samples.astronaut()).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def images_per_second(
    work: Callable[[], Awaitable[int]], rounds: int
) -> tuple[float, list[float]]:
    await work()  # warm-up round, not counted
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        count = await work()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates), rates


async def model_alone(
    registry: ModelRegistry, batch: int, total: int, model_id: str = MODEL
) -> int:
    model = registry.get(model_id)
    tensors = np.zeros((batch, *model.input_shape), dtype=np.float32)
    for _ in range(total // batch):
        await asyncio.to_thread(model.predict, tensors)
    return total // batch * batch


async def pipeline(image_pipeline: Pipeline, image: bytes, total: int, concurrency: int) -> int:
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await image_pipeline.embed_all([image], ["input"], MODEL, account=None)

    await asyncio.gather(*(one() for _ in range(total)))
    return total


def start_server(workdir: Path) -> tuple[subprocess.Popen[str], str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPIFY_")}
    dupify = str(Path(sys.executable).parent / "dupify")
    subprocess.run([dupify, "migrate"], cwd=workdir, env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        [dupify, "serve", "--port", str(port)],
        cwd=workdir,
        env={**env, "COLUMNS": "200", **UNLIMITED_PLAN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = ""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        output += process.stdout.readline()
        if "Application startup complete" in output:
            match = KEY.search(output)
            assert match, output
            # Keep reading the server's log (one access line per request), or the pipe fills
            # and the server blocks on its next write.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, base, match.group(0)
    process.kill()
    raise RuntimeError("server did not start:\n" + output)


_requests_sent = itertools.count()


def distinct(jpeg: bytes) -> bytes:
    """The same JPEG with a numbered comment segment after SOI: new bytes, the same pixels."""
    comment = f"bench request {next(_requests_sent)}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


async def over_http(
    base: str,
    key: str,
    image: bytes,
    total: int,
    concurrency: int,
    path: str = "/v1/embeddings",
    cached: bool = False,
) -> int:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def one() -> None:
            async with semaphore:
                body = image if cached else distinct(image)
                response = await client.post(path, content=body, headers=headers)
                response.raise_for_status()
                if response.headers["X-Cache"] != ("hit" if cached else "miss"):
                    raise RuntimeError(f"unexpected X-Cache: {response.headers['X-Cache']}")

        await asyncio.gather(*(one() for _ in range(total)))
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64, help="images per round")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    inference = InferenceSettings(intra_op_threads=cores)
    registry = ModelRegistry(inference)
    backend = LocalBackend(registry, inference)
    await backend.start()
    decoder = Decoder(ImageLimits(), workers=cores)
    decoder.warm_up()
    image_pipeline = build_pipeline(
        decoder, registry, backend, SessionPolicy.from_settings(inference)
    )
    photos = {"512 px": jpeg_of((512, 384)), "12 MP": jpeg_of((4000, 3000))}

    rows: list[tuple[str, str, float, list[float]]] = []
    for batch in (1, 16):
        median, rates = await images_per_second(
            lambda batch=batch: model_alone(registry, batch, args.images), args.rounds
        )
        rows.append((f"model alone, batch {batch}", "tensor", median, rates))
    for batch in (1, 16):
        median, rates = await images_per_second(
            lambda batch=batch: model_alone(registry, batch, args.images, SEMANTIC_MODEL),
            args.rounds,
        )
        rows.append((f"{SEMANTIC_MODEL} alone, batch {batch}", "tensor", median, rates))
    for label, image in photos.items():
        median, rates = await images_per_second(
            lambda image=image: pipeline(image_pipeline, image, args.images, args.concurrency),
            args.rounds,
        )
        rows.append(("pipeline: decode + preprocess + model", label, median, rates))
    await backend.stop()
    decoder.close()

    with tempfile.TemporaryDirectory() as workdir:
        process, base, key = start_server(Path(workdir))
        try:
            for label, image in photos.items():
                median, rates = await images_per_second(
                    lambda image=image: over_http(base, key, image, args.images, args.concurrency),
                    args.rounds,
                )
                rows.append((f"HTTP, {args.concurrency} concurrent clients", label, median, rates))
            for label, image in photos.items():
                median, rates = await images_per_second(
                    lambda image=image: over_http(
                        base, key, image, args.images, args.concurrency, "/v1/analyze"
                    ),
                    args.rounds,
                )
                rows.append(("HTTP /v1/analyze, default features", label, median, rates))
            hit = photos["12 MP"]
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:  # fill the cache
                primed = await client.post(
                    "/v1/embeddings",
                    content=hit,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
                )
                primed.raise_for_status()
            median, rates = await images_per_second(
                lambda: over_http(base, key, hit, args.images, args.concurrency, cached=True),
                args.rounds,
            )
            rows.append(("HTTP, cache hit", "12 MP", median, rates))
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)

    baseline = rows[1][2]  # the model alone at batch 16
    table = Table(
        title=f"images/s ({MODEL} unless a stage names another model) on {cores} cores: "
        f"median of {args.rounds} rounds "
        f"of {args.images} images"
    )
    for column in ("stage", "input", "images/s (median)", "min..max", "x model alone (b16)"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage, source, median, rates in rows:
        table.add_row(
            stage,
            source,
            f"{median:.1f}",
            f"{min(rates):.1f}..{max(rates):.1f}",
            f"{median / baseline:.2f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    asyncio.run(main())
