"""Issue 16, item 3: the server's resident memory under 200 concurrent maximum-size uploads.

A fresh `dupify serve` with the default caps (10 MiB an image, 20 MiB a body, 256 MiB of bodies
held at once, 768 MiB decoding at once) gets 200 clients at the same instant, each uploading one
image at the per-image cap: half real JPEGs of about 35 megapixels padded to exactly the cap
(distinct bytes, so the cache answers none), a quarter one byte over the cap, a quarter not an
image at all. The resident memory of the server and its decoder processes together is sampled
every 20 ms from /proc; the table gives its peak against the documented bound
(docs/operations.md, "Memory bound"):

    bound = idle + 2 x body room + decoders x max image bytes + decoding budget

where `idle` is the same processes' memory just before the burst (models loaded, warmed up).
Also the statuses the clients got (only 200, 413, 422, 429 and 503 with Retry-After are
documented). Run by `make bench` after the throughput rows, or alone:

    .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import asyncio
import collections
import io
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from bench_embeddings import jpeg_of as plain_jpeg
from bench_servers import start_dupify
from dupify.config import Settings, available_cores

CLIENTS = 200
MiB = 1024 * 1024


def padded_to(jpeg: bytes, size: int, stamp: int) -> bytes:
    """The JPEG with comment segments after its SOI, so it is exactly `size` bytes; `stamp`
    makes each client's bytes distinct (the same pixels)."""
    segments = bytearray(b"%08d" % stamp)
    missing = size - len(jpeg) - len(segments) - 4
    body = bytearray(jpeg[:2])
    body += b"\xff\xfe" + (len(segments) + 2).to_bytes(2, "big") + segments
    while missing > 0:
        chunk = min(65_533, missing - 4) if missing > 4 + 1 else 1
        body += b"\xff\xfe" + (chunk + 2).to_bytes(2, "big") + bytes(chunk)
        missing -= chunk + 4
    body += jpeg[2:]
    if len(body) != size:
        raise RuntimeError(f"padding came to {len(body)} bytes, not {size}")
    return bytes(body)


def large_jpeg() -> bytes:
    """About 35 megapixels (under the 40 MP cap) of a real photo, well under 10 MiB."""
    photo = Image.open(io.BytesIO(plain_jpeg((1024, 1024)))).resize((7000, 5000))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def tree_rss(pid: int) -> int:
    """Resident bytes of the process and its children (the decoder workers)."""
    pids = [pid]
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    pids += [int(child) for child in found.stdout.split()]
    total = 0
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


@dataclass
class MemoryResult:
    idle: int
    peak: int
    bound: int
    statuses: dict[str, int]
    undocumented: int
    seconds: float


def measure_memory(workdir: Path) -> MemoryResult:
    settings = Settings()
    limits, room = settings.limits, settings.server.body_room_bytes
    decoders = settings.inference.decode_workers or available_cores()
    cap = limits.max_image_bytes
    base = large_jpeg()
    bodies = [padded_to(base, cap, index) for index in range(CLIENTS // 2)]
    bodies += [padded_to(base, cap + 1, 0)] * (CLIENTS // 4)
    bodies += [b"\x00not an image" * (cap // 13)] * (CLIENTS // 4)
    server, key = start_dupify(workdir, 1)
    try:
        pid = server.process.pid
        time.sleep(1)
        idle = tree_rss(pid)
        bound = idle + 2 * room + decoders * cap + limits.max_decoding_bytes
        peak, stop = idle, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        responses = asyncio.run(_burst(server.base, key, bodies))
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
    finally:
        server.stop()
    statuses: collections.Counter[str] = collections.Counter()
    undocumented = 0
    for response in responses:
        code = response.json().get("error", {}).get("code", "") if response.is_error else ""
        statuses[f"{response.status_code} {code}".strip()] += 1
        retry = response.headers.get("retry-after")
        if response.status_code not in (200, 413, 422, 429, 503) or (
            response.status_code in (429, 503) and not retry
        ):
            undocumented += 1
    return MemoryResult(idle, peak, bound, dict(statuses), undocumented, seconds)


async def _burst(base: str, key: str, bodies: list[bytes]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/embeddings", content=body, headers=headers) for body in bodies)
            )
        )


def print_memory(result: MemoryResult) -> None:
    settings = Settings()
    cap = settings.limits.max_image_bytes // MiB
    print()
    room = settings.server.body_room_bytes // MiB
    decoding = settings.limits.max_decoding_bytes // MiB
    print(
        f"Memory bound: {CLIENTS} concurrent uploads at the {cap} MiB cap (body room {room} MiB, "
        f"decoding budget {decoding} MiB), {result.seconds:.1f} s"
    )
    print("| resident memory, server + decoders | MiB |")
    print("|---|---|")
    print(f"| idle, before the burst | {result.idle / MiB:.0f} |")
    print(f"| peak during the burst | {result.peak / MiB:.0f} |")
    print(f"| documented bound | {result.bound / MiB:.0f} |")
    verdict = "PASS" if result.peak <= result.bound and not result.undocumented else "FAIL"
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items()))
    print(f"{verdict}  peak <= bound, only documented statuses ({answers})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print_memory(measure_memory(Path(tmp)))
