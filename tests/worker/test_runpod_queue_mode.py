"""Issue 12: `dupify worker` in the RunPod SDK's real serverless mode (no local API: it polls the
queue's job-take routes and posts job-done, as on RunPod) behind a stand-in for RunPod's queue on
127.0.0.1; a server with DUPIFY_INFERENCE__BACKEND=runpod pointed at that queue's public routes
answers as in-process inference does, and the worker takes jobs in batches of
DUPIFY_WORKER__CONCURRENCY (the SDK's concurrency modifier)."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dupify.app import create_app
from dupify.images.workers import Decoder
from dupify.inference.registry import ModelRegistry
from support.api import ApiContext
from support.backends import PassThroughBackend
from support.fake_runpod_queue import running_queue
from support.samples import encode, sample_photos
from support.servers import BIN, clean_env
from support.settings import make_settings
from support.workers import PLANS, fresh_database, remote_settings

IMAGES = [
    base64.b64encode(encode(rgb[:200:2, :240:2], "JPEG", quality=90)).decode()
    for _, rgb in sample_photos(12)
]


class QueueWorker:
    """`dupify worker` as RunPod starts it: its environment points the SDK at the queue."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "dupify"), "worker"],
            cwd=workdir,
            env=clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stream = self.process.stdout
        assert stream is not None
        threading.Thread(target=lambda: self.output.extend(stream), daemon=True).start()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


async def embeddings(context: ApiContext) -> list[Any]:
    async with context as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        answers = []
        for body in ({"input": IMAGES[0]}, {"input": IMAGES}):
            response = await api.client.post("/v1/embeddings", json=body, headers=auth, timeout=120)
            assert response.status_code == 200, response.text
            answers.append(np.array([item["embedding"] for item in response.json()["data"]]))
        return answers


async def test_the_worker_in_serverless_mode_serves_jobs_from_the_queue(
    tmp_path: Path, decoder: Decoder, registry: ModelRegistry, backend: Any
) -> None:
    with running_queue(public_key="rp-public-key") as queue:
        worker = QueueWorker(tmp_path, {**queue.worker_env(), "DUPIFY_WORKER__CONCURRENCY": "3"})
        try:
            for _ in range(600):  # the worker polls the queue once its models are loaded
                if queue.seen("/job-take") or worker.process.poll() is not None:
                    break
                time.sleep(0.2)
            assert queue.seen("/job-take"), "".join(worker.output)
            local_settings = make_settings(fresh_database(tmp_path, "local.db"), plans=PLANS)
            local = ApiContext(
                create_app(
                    local_settings,
                    decoder=decoder,
                    registry=registry,
                    backend=PassThroughBackend(backend),
                ),
                local_settings,
            )
            settings = remote_settings(
                fresh_database(tmp_path, "remote.db"),
                None,
                endpoint_url=queue.url,
                api_key="rp-public-key",
                max_batch=4,  # 12 images: three jobs, taken together
            )
            remote = ApiContext(create_app(settings, decoder=decoder, registry=registry), settings)
            expected = await embeddings(local)
            answered = await embeddings(remote)
            for want, got in zip(expected, answered, strict=True):
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
            done = queue.seen("/job-done/")
            assert len(done) >= 1 + 12 // 4
            assert all(job.status == "COMPLETED" for job in queue.jobs.values())
            # The SDK asked for up to DUPIFY_WORKER__CONCURRENCY jobs at once.
            batches = [query for _, path, query in queue.seen("/job-take-batch/")]
            assert any("batch_size=3" in query for query in batches), batches
            assert worker.process.poll() is None
            logged = "".join(worker.output)
            assert IMAGES[0][500:580] not in logged and "Traceback" not in logged
        finally:
            worker.stop()
