"""A decoder worker that dies mid-task: stopped from outside (SIGTERM, as systemd and a process
group's Ctrl-C send; SIGKILL, as the OOM killer sends) the task is retried on a fresh worker,
and a second stop is 503 with Retry-After; an upload that kills its worker every time is tried
once more, then refused as the image's error. Never 422 for the server's failure."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dupify.config import ImageLimits
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from support.samples import noise_png

# Generous: these tests stop workers on purpose, never by the decode budget.
LIMITS = ImageLimits(decode_timeout_s=30)


def report_pid_then_sleep(log: str, seconds: float) -> str:
    """Runs in a worker: says which process it runs in (one line per attempt), then works."""
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "done"


def report_pid_then_die(log: str) -> None:
    """Runs in a worker: an upload that brings its decoder down, as a bomb the OOM killer stops."""
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


async def attempt_pids(log: Path, count: int) -> list[int]:
    """The worker pids of the first `count` attempts, once that many have started."""
    async with asyncio.timeout(30):
        while True:
            pids = [int(line) for line in log.read_text().split()] if log.exists() else []
            if len(pids) >= count:
                return pids
            await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def pool() -> Iterator[Decoder]:
    decoder = Decoder(LIMITS, workers=2)
    decoder.warm_up()
    yield decoder
    decoder.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_worker_stopped_mid_task_is_replaced_and_the_task_retried(
    pool: Decoder, tmp_path: Path, stop: signal.Signals
) -> None:
    log = tmp_path / "attempts"
    task = asyncio.create_task(pool.run(report_pid_then_sleep, str(log), 0.5, account="a"))
    [first] = await attempt_pids(log, 1)
    os.kill(first, stop)
    assert await task == "done"
    second = (await attempt_pids(log, 2))[1]
    assert second != first  # a fresh worker
    assert (await pool.decode(noise_png(32, 32))).width == 32


async def test_workers_stopped_on_both_tries_answer_503_with_retry_after(
    pool: Decoder, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    task = asyncio.create_task(pool.run(report_pid_then_sleep, str(log), 5.0, account="a"))
    for attempt in (1, 2):
        os.kill((await attempt_pids(log, attempt))[-1], signal.SIGTERM)
    with pytest.raises(ApiError) as caught:
        await task
    assert (caught.value.code, caught.value.status) == ("decoder_unavailable", 503)
    assert caught.value.headers == {"Retry-After": "1"}
    assert len(await attempt_pids(log, 2)) == 2  # not tried a third time
    assert (await pool.decode(noise_png(32, 32))).width == 32


async def test_an_upload_that_kills_its_worker_is_tried_once_more_then_refused(
    pool: Decoder, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    with pytest.raises(ApiError) as caught:
        await pool.run(report_pid_then_die, str(log), account="a")
    assert (caught.value.code, caught.value.status) == ("invalid_image", 422)
    assert len(log.read_text().split()) == 2
    assert (await pool.decode(noise_png(32, 32))).width == 32


async def test_every_worker_stopped_at_once_mid_request(pool: Decoder, tmp_path: Path) -> None:
    """The process group's SIGTERM: both workers busy, both stopped; both tasks retried."""
    logs = [tmp_path / "first", tmp_path / "second"]
    tasks = [
        asyncio.create_task(pool.run(report_pid_then_sleep, str(log), 0.5, account="a"))
        for log in logs
    ]
    busy = [(await attempt_pids(log, 1))[0] for log in logs]
    for pid in busy:
        os.kill(pid, signal.SIGTERM)
    assert await asyncio.gather(*tasks) == ["done", "done"]
