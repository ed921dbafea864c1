"""`make bench`: Dupify against the server a user would write by hand, in one run, one table.

Three servers, started on 127.0.0.1 with the same stack (uvicorn, httptools, the same worker
count) and driven, one at a time, by the same C load generator (Debian's `wrk`, so the client
does not eat the cores it measures, through bench/wrk_bodies.lua):

- the hand-written peer (bench/peer_server.py: FastAPI + Pillow + ONNX Runtime, full decode,
  batch 1, JSON floats, the same graph and preprocessing as Dupify's default model);
- the framework floor (bench/floor_server.py: read the body, hash it, answer a stored 1024-d
  vector as JSON floats; no auth, limits or log): what a cache hit is measured against;
- `dupify serve` (a fresh database, a plan whose limits the bench cannot reach).

Every request of a miss row carries new bytes (a numbered JPEG comment over the same pixels,
written by the Lua script), so no cache answers; the cache-hit rows repeat one body (Dupify's is
primed first). Each row is the median of `--rounds` wrk runs of `--seconds` after one warm-up
run; a row whose responses were not all 2xx, or whose X-Cache said otherwise than the row
expects, is marked. The rounds are interleaved: every round runs each row once, a Dupify row
right after the peer or floor row it is compared with, then the model rows (this process, on
pre-made tensors), while the idle servers wait. So a machine that slows down or speeds up
during the run (a shared one does) moves both sides of every ratio alike, instead of whichever
rows ran in that minute. Then the ratios of issue 16 with pass/fail, and the memory bound
under 200 concurrent maximum-size uploads (bench/bench_memory.py). `--chart` writes
docs/performance-chart.png.

    make bench                                      # 3 rounds of 10 s per row
    .venv/bin/python bench/bench_peers.py --rounds 1 --seconds 2 --warmup 1   # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench_embeddings import jpeg_of as plain_jpeg
from bench_servers import Server, start_dupify, start_plain
from dupify.config import InferenceSettings
from dupify.inference.registry import ModelRegistry

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "wrk_bodies.lua"
MARKER = b"@@DUPIFYSTAMP@@@"  # 16 bytes; the Lua script writes a stamp over each
VISUAL, SEMANTIC = "dupify-visual-1", "dupify-semantic-1"
BOUNDARY = "dupifybenchboundary"


def jpeg_of(size: tuple[int, int]) -> bytes:
    """The pipeline bench's photo at `size`, with a comment segment holding the stamp marker."""
    jpeg = plain_jpeg(size)
    return jpeg[:2] + b"\xff\xfe" + (len(MARKER) + 2).to_bytes(2, "big") + MARKER + jpeg[2:]


def prime_repeat_body(base: str, key: str, body: bytes) -> None:
    """Send Dupify the cache-hit rows' body once, so that every request of theirs is a hit."""
    primed = httpx.post(
        base + "/v1/embeddings",
        content=body.replace(MARKER, b"r%015d" % 1),  # the stamp wrk_bodies.lua's "repeat" writes
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
        timeout=120,
    )
    primed.raise_for_status()


def multipart_of(images: list[bytes]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
        for i, image in enumerate(images)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass(frozen=True)
class Load:
    """One wrk row: where to send which body, and what X-Cache must say."""

    name: str
    path: str
    body: str  # a key of the bodies dict
    images: int = 1
    mode: str = "distinct"  # or "repeat" (one body, cache hits)
    content_type: str = "image/jpeg"
    expect_cache: str | None = None  # "hit" / "miss" for Dupify's rows


@dataclass
class Row:
    server: str
    name: str
    images: int
    rates: list[float] = field(default_factory=list)  # requests/s per round
    p50s: list[float] = field(default_factory=list)  # ms
    p99s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.p50s) if self.p50s else float("nan")

    @property
    def p99(self) -> float:
        return statistics.median(self.p99s) if self.p99s else float("nan")


# Each wrk run gets its own number, stamped into every distinct body: a later round (or the
# warm-up before it) must not resend bytes an earlier one sent, or the cache would answer.
RUN_NUMBERS = itertools.count(1)


def run_wrk(args: argparse.Namespace, url: str, body_file: Path, load: Load, key: str) -> dict:
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.seconds}s"]
    argv += ["--timeout", "60s", "-s", str(LUA), url, "--"]
    argv += [str(body_file), load.mode, load.content_type, key, str(next(RUN_NUMBERS) % 1000)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 120)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            result: dict = json.loads(line.removeprefix("WRK_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


def measure_once(
    args: argparse.Namespace, url: str, body: Path, load: Load, key: str, row: Row
) -> None:
    """One wrk run of a row, added to it."""
    result = run_wrk(args, url, body, load, key)
    seconds = result["duration_us"] / 1e6
    row.rates.append(result["requests"] / seconds)
    row.p50s.append(result["p50_us"] / 1000)
    row.p99s.append(result["p99_us"] / 1000)
    if not result["requests"]:
        row.problems.append("no response within a run: lengthen --seconds")
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        row.problems.append(f"{errors} errors/non-2xx")
    wrong = result["misses"] if load.expect_cache == "hit" else result["hits"]
    if load.expect_cache and wrong:
        row.problems.append(f"{wrong} X-Cache not {load.expect_cache}")


# One row of the plan: which server (its name, the server and its key) runs which load.
Planned = tuple[str, Server, str, Load]


def measure(
    args: argparse.Namespace, plan: list[Planned], files: dict, models: ModelRates
) -> list[Row]:
    """Every row `args.rounds` times, interleaved (one warm-up run of each first), and a model
    round after each round of rows."""
    rows = [Row(name, load.name, load.images) for name, _, _, load in plan]
    if args.warmup:
        for _, server, key, load in plan:
            run_wrk(args, server.base + load.path, files[load.body], load, key)
            server.settle()
    for number in range(args.rounds):
        for row, (_, server, key, load) in zip(rows, plan, strict=True):
            measure_once(args, server.base + load.path, files[load.body], load, key, row)
            server.settle()
        models.round()
        print(f"  round {number + 1} of {args.rounds} done", flush=True)
    for row in rows:
        print(f"  {row.server:6} {row.name:34} {row.rps:8.1f} req/s  p50 {row.p50:7.1f} ms")
    return rows


class ModelRates:
    """Images/s of the default model alone at batch 16, and of the two analyze models back to
    back at batch 16 (pre-made tensors, this process, every core): one round at a time, the
    medians of them all."""

    BATCH = 16

    def __init__(self, images: int) -> None:
        cores = len(os.sched_getaffinity(0))
        registry = ModelRegistry(InferenceSettings(intra_op_threads=cores))
        self.visual, self.semantic = registry.get(VISUAL), registry.get(SEMANTIC)
        self.repeats = max(1, images // self.BATCH)
        self.alone_rates: list[float] = []
        self.pair_rates: list[float] = []
        for model in (self.visual, self.semantic):
            model.predict(self._zeros(model))  # warm-up

    def _zeros(self, model: Any) -> np.ndarray:
        return np.zeros((self.BATCH, *model.input_shape), dtype=np.float32)

    def _rate(self, models: list[Any]) -> float:
        tensors = [self._zeros(model) for model in models]
        started = time.perf_counter()
        for _ in range(self.repeats):
            for model, tensor in zip(models, tensors, strict=True):
                model.predict(tensor)
        return self.repeats * self.BATCH / (time.perf_counter() - started)

    def round(self) -> None:
        self.alone_rates.append(self._rate([self.visual]))
        self.pair_rates.append(self._rate([self.visual, self.semantic]))

    @property
    def alone(self) -> float:
        return statistics.median(self.alone_rates)

    @property
    def pair(self) -> float:
        return statistics.median(self.pair_rates)


def ratio_lines(rows: dict[tuple[str, str], Row], alone: float, pair: float) -> list[str]:
    def get(server: str, name: str) -> Row:
        return rows[(server, name)]

    d512, p512 = get("dupify", "embeddings 512 px"), get("peer", "embeddings 512 px")
    d12, p12 = get("dupify", "embeddings 12 MP"), get("peer", "embeddings 12 MP")
    hit, floor = get("dupify", "cache hit 512 px"), get("floor", "cache hit 512 px")
    analyze, batch = (
        get("dupify", "analyze 512 px (default features)"),
        get("dupify", "batch of 16 x 512 px"),
    )
    checks = [
        (
            "512 px: Dupify req/s >= 1.25 x peer",
            ratio(d512.rps, p512.rps),
            1.25,
            True,
            (d512, p512),
        ),
        (
            "512 px: Dupify p99 <= peer p99 (ratio <= 1)",
            ratio(d512.p99, p512.p99),
            1.0,
            False,
            (d512, p512),
        ),
        ("12 MP: Dupify req/s >= 4 x peer", ratio(d12.rps, p12.rps), 4.0, True, (d12, p12)),
        ("cache hit: req/s >= 0.6 x floor", ratio(hit.rps, floor.rps), 0.6, True, (hit, floor)),
        ("cache hit: p50 <= 2 x floor p50", ratio(hit.p50, floor.p50), 2.0, False, (hit, floor)),
        (
            "analyze 512 px >= 0.6 x its two models back to back",
            ratio(analyze.rps, pair),
            0.6,
            True,
            (analyze,),
        ),
        (
            "16-image request >= 0.7 x model alone b16 (img/s)",
            ratio(batch.rps * 16, alone),
            0.7,
            True,
            (batch,),
        ),
    ]
    lines = []
    for text, value, bound, at_least, involved in checks:
        if any(row.problems for row in involved):
            # A row whose answers were wrong (errors, or cache hits where misses were due)
            # measured something else: its ratio says nothing.
            lines.append(f"INVALID  {text}: {value:.2f} (see the row's notes)")
            continue
        ok = value >= bound if at_least else value <= bound  # False for nan (a row went empty)
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}: {value:.2f}")
    return lines


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and a == a else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per row (median)")
    parser.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="1: one uncounted run per row")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, every server")
    parser.add_argument("--model-images", type=int, default=64, help="per model round")
    parser.add_argument("--chart", action="store_true", help="write docs/performance-chart.png")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip item 3")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")

    small, large = jpeg_of((512, 512)), jpeg_of((4000, 3000))
    peer_loads = [
        Load("embeddings 512 px", "/embed", "512"),
        Load("embeddings 12 MP", "/embed", "12mp"),
    ]
    floor_loads = [Load("cache hit 512 px", "/embed", "512", mode="repeat")]
    dupify_loads = [
        Load("embeddings 512 px", "/v1/embeddings", "512", expect_cache="miss"),
        Load("embeddings 12 MP", "/v1/embeddings", "12mp", expect_cache="miss"),
        Load("cache hit 512 px", "/v1/embeddings", "512", mode="repeat", expect_cache="hit"),
        Load("analyze 512 px (default features)", "/v1/analyze", "512", expect_cache="miss"),
        Load(
            "batch of 16 x 512 px",
            "/v1/embeddings",
            "batch16",
            images=16,
            content_type=f"multipart/form-data; boundary={BOUNDARY}",
            expect_cache="miss",
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {"512": work / "512.body", "12mp": work / "12mp.body"}
        files["batch16"] = work / "batch16.body"
        files["512"].write_bytes(small)
        files["12mp"].write_bytes(large)
        files["batch16"].write_bytes(multipart_of([small] * 16))
        cores = len(os.sched_getaffinity(0))
        print(
            f"{cores} cores, {args.workers} worker(s), {args.connections} connections", flush=True
        )
        (work / "dupify").mkdir()
        servers: list[Server] = []
        try:
            servers.append(peer := start_plain("peer_server", args.workers))
            servers.append(floor := start_plain("floor_server", args.workers))
            dupify, key = start_dupify(work / "dupify", args.workers)
            servers.append(dupify)
            prime_repeat_body(dupify.base, key, small)
            # Each Dupify row right after the row it is compared with.
            plan: list[Planned] = [
                ("peer", peer, "-", peer_loads[0]),
                ("dupify", dupify, key, dupify_loads[0]),
                ("peer", peer, "-", peer_loads[1]),
                ("dupify", dupify, key, dupify_loads[1]),
                ("floor", floor, "-", floor_loads[0]),
                *(("dupify", dupify, key, load) for load in dupify_loads[2:]),
            ]
            models = ModelRates(args.model_images)
            rows = measure(args, plan, files, models)
        finally:
            for server in servers:
                server.stop()
    print_table(args, rows, models.alone, models.pair)
    if args.memory:
        from bench_memory import measure_memory, print_memory  # it starts Dupify as this does

        with tempfile.TemporaryDirectory() as tmp:
            print_memory(measure_memory(Path(tmp)))
    if args.chart:
        from peer_chart import write_chart

        target = BENCH.parent / "docs" / "performance-chart.png"
        write_chart(rows, target)
        print(f"chart: {target}")


def print_table(args: argparse.Namespace, rows: list[Row], alone: float, pair: float) -> None:
    print()
    print(
        f"| server | load | req/s | images/s | p50 ms | p99 ms | notes |  "
        f"(median of {args.rounds} x {args.seconds} s, {args.connections} connections)"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| model alone | {VISUAL}, batch 16, pre-made tensors | | {alone:.1f} | | | |")
    print(f"| model alone | {VISUAL} + {SEMANTIC} back to back, batch 16 | | {pair:.1f} | | | |")
    for row in rows:
        notes = "; ".join(sorted(set(row.problems))) or ""
        print(
            f"| {row.server} | {row.name} | {row.rps:.1f} | {row.rps * row.images:.1f} | "
            f"{row.p50:.1f} | {row.p99:.1f} | {notes} |"
        )
    print()
    for line in ratio_lines({(r.server, r.name): r for r in rows}, alone, pair):
        print(line)


if __name__ == "__main__":
    main()
