"""One `make bench` row against one server, with the server's CPU time per request: how each
lever in docs/performance.md ("The levers, each measured") was measured before and after.

The server is started as `make bench` starts it (bench/bench_servers.py) and driven by the same
wrk script; after one uncounted warm-up run, each round prints req/s, p50 and p99 and the CPU
time all the server's processes spent per request (read from /proc: a figure that barely moves
when the machine is shared, unlike req/s). `--env` sets a DUPIFY_ setting for Dupify. To measure
a lever "before", run the same command with `PYTHONPATH=<a checkout without it>/src`.

    .venv/bin/python bench/bench_row.py --row 512
    .venv/bin/python bench/bench_row.py --row 512 --env DUPIFY_INFERENCE__CONCURRENT_BATCHES=1
    .venv/bin/python bench/bench_row.py --server peer --row 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_embeddings import UNLIMITED_PLAN
from bench_peers import BOUNDARY, Load, jpeg_of, multipart_of, prime_repeat_body, run_wrk
from bench_servers import cpu_ticks, start_dupify, start_plain

ROWS = {
    "512": ("/v1/embeddings", "512", "distinct", 1),
    "12mp": ("/v1/embeddings", "12mp", "distinct", 1),
    "hit": ("/v1/embeddings", "512", "repeat", 1),
    "analyze": ("/v1/analyze", "512", "distinct", 1),
    "batch16": ("/v1/embeddings", "batch16", "distinct", 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["dupify", "peer", "floor"], default="dupify")
    parser.add_argument("--row", choices=sorted(ROWS), default="512")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], help="NAME=value, for Dupify")
    args = parser.parse_args()
    path, body, mode, images = ROWS[args.row]
    if args.server != "dupify":
        path = "/embed"
    content_type = f"multipart/form-data; boundary={BOUNDARY}" if images > 1 else "image/jpeg"
    load = Load(args.row, path, body, images=images, mode=mode, content_type=content_type)
    small = jpeg_of((512, 512))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {name: work / f"{name}.body" for name in ("512", "12mp", "batch16")}
        files["512"].write_bytes(small)
        files["12mp"].write_bytes(jpeg_of((4000, 3000)))
        files["batch16"].write_bytes(multipart_of([small] * 16))
        if args.server == "dupify":
            UNLIMITED_PLAN.update(dict(item.split("=", 1) for item in args.env))
            (work / "dupify").mkdir()
            server, key = start_dupify(work / "dupify", 1)
            prime_repeat_body(server.base, key, small)
        else:
            server, key = start_plain(f"{args.server}_server", 1), "-"
        try:
            wrk = argparse.Namespace(wrk_threads=1, connections=8, seconds=args.seconds)
            run_wrk(wrk, server.base + path, files[body], load, key)  # warm-up
            for number in range(args.rounds):
                ticks, started = cpu_ticks(server.process.pid), time.monotonic()
                result = run_wrk(wrk, server.base + path, files[body], load, key)
                cpu_s = (cpu_ticks(server.process.pid) - ticks) / 100
                wall_s = time.monotonic() - started
                rate = result["requests"] / (result["duration_us"] / 1e6)
                print(
                    f"round {number}: {rate:.1f} req/s, p50 {result['p50_us'] / 1000:.1f} ms, "
                    f"p99 {result['p99_us'] / 1000:.1f} ms, {cpu_s / wall_s:.2f} cores, "
                    f"{cpu_s / max(1, result['requests']) * 1000:.2f} ms CPU per request",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
