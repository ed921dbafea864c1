"""Images per second of both bundled models at batch 1, 16 and 64: in process (the models'
`predict` on the configured device) and through a real `dupify worker serve` (jobs over HTTP on
127.0.0.1, wire encoding included). Run by bench/gpu.sh on a GPU machine; `--device cpu` is a
dry run anywhere.

    .venv/bin/python bench/bench_gpu.py --device cuda --seconds 4 --markdown results.md
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from dupify.config import InferenceSettings
from dupify.inference.registry import ModelRegistry
from dupify.inference.wire import decode_outputs, encode_job

BATCHES = (1, 16, 64)
BIN = Path(sys.executable).parent


def photos(count: int) -> list[np.ndarray]:
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry"]
    return [np.ascontiguousarray(getattr(data, names[i % len(names)])()) for i in range(count)]


def rate(run: object, images: int, seconds: float) -> float:
    """Images per second of `run()` (one batch of `images`), after one warm-up call."""
    assert callable(run)
    run()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        done += images
    return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_worker(device: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DUPIFY_INFERENCE__DEVICE": device, "DUPIFY_WORKER__MAX_ITEMS": "64"}
    process = subprocess.Popen(
        [str(BIN / "dupify"), "worker", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit("the worker exited; run `dupify worker serve` by hand to see why")
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the worker did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()

    registry = ModelRegistry(InferenceSettings(device=args.device))
    devices = {model.id: model.session.device for model in registry.models}
    images = photos(max(BATCHES))
    worker, url = start_worker(args.device)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for model in registry.models:
                tensors = [model.preprocess(pixels) for pixels in images]
                for batch in BATCHES:
                    stacked = np.stack(tensors[:batch])
                    local = rate(lambda s=stacked, m=model: m.predict(s), batch, args.seconds)

                    def remote(m: str = model.id, b: int = batch, t: list = tensors) -> None:
                        job = encode_job(m, t[:b])
                        answer = client.post("/runsync", json={"input": job}).json()
                        assert answer["status"] == "COMPLETED", answer
                        decode_outputs(answer["output"], m, b)

                    through = rate(remote, batch, args.seconds)
                    rows.append((model.id, devices[model.id], batch, local, through))
                    print(
                        f"{model.id} {devices[model.id]} batch {batch}: {local:.1f} in process,"
                        f" {through:.1f} through the worker",
                        flush=True,
                    )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    lines = [
        "| model | device | batch | images/s in process | images/s through `dupify worker serve` |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {d} | {b} | {loc:.1f} | {rem:.1f} |" for m, d, b, loc, rem in rows]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
