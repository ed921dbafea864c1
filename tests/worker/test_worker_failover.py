"""Issue 12: killing the worker in the middle of a load gives documented 503s with Retry-After
(or, with DUPIFY_INFERENCE__FALLBACK=local, answers from this process), never a 500 or a hang,
with one request-log row per response; starting the worker again brings the remote path back
without restarting the server."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from dupify.app import create_app
from dupify.db import session_factory
from dupify.images.workers import Decoder
from dupify.inference.registry import ModelRegistry
from dupify.usage.models import RequestLog
from support.api import ApiContext
from support.samples import encode
from support.workers import fresh_database, remote_settings, start_worker

CLIENTS = 4


def distinct_image(seed: int) -> str:
    """A small image no other request sends: the cache never answers for the backend."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    return base64.b64encode(encode(pixels, "PNG")).decode()


@pytest.mark.parametrize("fallback", ["none", "local"])
async def test_killing_the_worker_mid_load_then_starting_it_again(
    tmp_path: Path, decoder: Decoder, registry: ModelRegistry, fallback: str
) -> None:
    worker = start_worker("serve", tmp_path)
    try:
        settings = remote_settings(
            fresh_database(tmp_path, "api.db"),
            worker,
            fallback,
            timeout_s=10,
            breaker_failures=1,
            breaker_reset_s=0.5,
        )
        answers: list[tuple[int, str | None, str | None, str]] = []
        seeds = iter(range(1_000_000))
        async with ApiContext(
            create_app(settings, decoder=decoder, registry=registry), settings
        ) as api:
            auth = {"Authorization": f"Bearer {api.new_key()}"}
            killed = asyncio.Event()

            async def one() -> None:
                body = {"input": [distinct_image(next(seeds)), distinct_image(next(seeds))]}
                response = await api.client.post(
                    "/v1/embeddings", json=body, headers=auth, timeout=120
                )
                code = response.json().get("error", {}).get("code")
                phase = "after" if killed.is_set() else "before"
                answers.append(
                    (response.status_code, code, response.headers.get("retry-after"), phase)
                )

            async def client(count: int) -> None:
                for _ in range(count):
                    await one()

            async def killer() -> None:
                while len(answers) < 6:
                    await asyncio.sleep(0.02)
                worker.kill()
                killed.set()

            await asyncio.gather(killer(), *(client(8) for _ in range(CLIENTS)))
            after = [answer for answer in answers if answer[3] == "after"]
            assert len(after) >= 10
            assert {status for status, *_ in answers} <= {200, 503}
            for status, code, retry_after, _ in answers:
                if status == 503:
                    assert code == "inference_unavailable" and retry_after and int(retry_after) >= 1
            failed = [answer for answer in after if answer[0] == 503]
            if fallback == "local":
                assert not failed  # every call answered in this process while the worker was gone
            else:
                assert failed and api.app.state.runtime.backend.breaker.opened >= 1

            worker.start()  # the same port: the server is not restarted
            backend = api.app.state.runtime.backend

            def remote_successes() -> int:
                stats = backend.stats()["dupify-visual-1"]
                return int(stats.batches - stats.failed_batches)

            before = remote_successes()
            for _ in range(200):
                await one()
                if answers[-1][0] == 200 and remote_successes() > before:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the remote path did not come back")
            assert backend.breaker.state == "closed"
            await api.flush_usage()
            with session_factory(api.engine)() as session:
                rows = session.scalar(select(func.count()).select_from(RequestLog))
            assert rows == len(answers)
    finally:
        worker.kill()
