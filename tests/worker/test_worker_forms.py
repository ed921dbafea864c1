"""Issue 12: a server with DUPIFY_INFERENCE__BACKEND=runpod, pointed at a real worker in either
form (`dupify worker serve`, and the handler under the RunPod SDK's local API server), answers
/v1/embeddings, /v1/analyze and /v1/compare as in-process inference does: vectors equal to 1e-5,
for one image and for full batches, with the same cache answers, quota refusals and request-log
rows; and no image bytes or pixels reach the disk meanwhile."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from dupify.app import create_app
from dupify.config import ImageLimits
from dupify.db import session_factory
from dupify.images.decoding import decode_image
from dupify.images.workers import Decoder
from dupify.inference.models import semantic, visual
from dupify.inference.registry import ModelRegistry
from dupify.inference.remote import RemoteBackend
from dupify.inference.wire import encode_job
from dupify.usage.models import RequestLog
from support.api import ApiContext
from support.backends import PassThroughBackend
from support.samples import encode, sample_photos
from support.settings import make_settings
from support.stored import files_holding, snapshot
from support.workers import (
    FORMS,
    PLANS,
    Worker,
    fresh_database,
    remote_settings,
    start_worker,
)

IGNORED = {"request_id", "created", "id", "latency_ms"}


def batch_of_32() -> list[bytes]:
    """32 distinct real images: 16 photos as JPEG, and the same mirrored as PNG, small."""
    photos = [rgb[: 2 * 160 : 2, : 2 * 200 : 2] for _, rgb in sample_photos(16)]
    jpegs = [encode(rgb, "JPEG", quality=90) for rgb in photos]
    pngs = [encode(np.ascontiguousarray(rgb[:, ::-1]), "PNG") for rgb in photos]
    return jpegs + pngs


IMAGES = [base64.b64encode(data).decode() for data in batch_of_32()]


@pytest.fixture(scope="module", params=FORMS)
def worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    running = start_worker(request.param, tmp_path_factory.mktemp(f"worker-{request.param}"))
    yield running
    running.kill()


def request_script() -> list[tuple[str, dict[str, Any]]]:
    """The same requests, in order, for both servers (70 images allowed, 83 asked)."""
    return [
        ("/v1/embeddings", {"input": IMAGES[0]}),
        ("/v1/embeddings", {"input": IMAGES}),
        ("/v1/embeddings", {"input": IMAGES[0]}),  # a cache hit
        ("/v1/analyze", {"input": IMAGES[1], "features": ["embedding", "labels", "safety"]}),
        ("/v1/analyze", {"input": IMAGES[:16], "features": ["embedding", "labels", "safety"]}),
        ("/v1/compare", {"a": IMAGES[2], "b": IMAGES[18]}),
        ("/v1/embeddings", {"input": IMAGES}),  # over the month's quota
    ]


async def run_script(context: ApiContext) -> tuple[list[Any], list[tuple[Any, ...]], Any]:
    answers = []
    async with context as api:
        backend = api.app.state.runtime.backend
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        for route, body in request_script():
            response = await api.client.post(route, json=body, headers=auth, timeout=120)
            assert response.status_code != 500, response.text
            answers.append(
                (route, response.status_code, response.headers.get("x-cache"), response.json())
            )
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        answers.append(("/readyz", 200, None, ready.json()["checks"].get("inference_backend")))
        await api.flush_usage()
        with session_factory(api.engine)() as session:
            rows = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
            logged = [
                (row.endpoint, row.status, row.error_code, row.images, row.cached_images)
                for row in rows
            ]
    return answers, logged, backend


def assert_close(local: Any, remote: Any, where: str = "") -> None:
    if isinstance(local, dict):
        assert isinstance(remote, dict) and local.keys() == remote.keys(), where
        for key in local.keys() - IGNORED:
            assert_close(local[key], remote[key], f"{where}.{key}")
    elif isinstance(local, list):
        assert isinstance(remote, list) and len(local) == len(remote), where
        for index, (a, b) in enumerate(zip(local, remote, strict=True)):
            assert_close(a, b, f"{where}[{index}]")
    elif isinstance(local, float):
        assert remote == pytest.approx(local, abs=1e-5), where
    else:
        assert local == remote, where


def needles() -> list[bytes]:
    """Pieces of the first image as uploaded (bytes, base64), of its pixels as the model gets
    them, and of its job payload as it crosses the wire."""
    first = base64.b64decode(IMAGES[0])
    pixels = decode_image(first, ImageLimits(), visual.RESIZE_SIDE).pixels
    tensor = visual.preprocess(pixels)
    wire = str(encode_job(visual.VisualModel.id, [tensor])["data"])
    middle = len(first) // 2
    return [
        first[middle : middle + 64],
        IMAGES[0][400:488].encode(),
        tensor.tobytes()[60_000:60_064],
        pixels.tobytes()[30_000:30_064],
        wire[2000:2088].encode(),
    ]


async def test_the_remote_backend_answers_as_in_process_inference(
    worker: Worker,
    tmp_path: Path,
    decoder: Decoder,
    registry: ModelRegistry,
    backend: Any,
) -> None:
    watched = [Path(tempfile.gettempdir()), tmp_path, worker.workdir]
    before = snapshot(watched)
    local = ApiContext(
        create_app(
            settings := make_settings(fresh_database(tmp_path, "local.db"), plans=PLANS),
            decoder=decoder,
            registry=registry,
            backend=PassThroughBackend(backend),
        ),
        settings,
    )
    remote_config = remote_settings(fresh_database(tmp_path, "remote.db"), worker)
    # No backend given: the app builds the configured one (RemoteBackend) from the settings.
    remote = ApiContext(
        create_app(remote_config, decoder=decoder, registry=registry), remote_config
    )
    local_answers, local_rows, _ = await run_script(local)
    remote_answers, remote_rows, remote_backend = await run_script(remote)
    assert isinstance(remote_backend, RemoteBackend)
    stats = remote_backend.stats()
    # The images the models saw went to the worker (those the cache answered did not): at
    # least the first image, the rest of the batch of 32 and the 16 analysed (labels: 16).
    assert stats[visual.VisualModel.id].items >= 1 + 31 + 16
    assert stats[semantic.SemanticModel.id].items >= 16
    assert stats[visual.VisualModel.id].failed_batches == 0

    assert local_answers.pop()[3] is None  # in-process: no remote state to report
    assert remote_answers.pop()[3] == "runpod (closed)"
    statuses = [(route, status, cache) for route, status, cache, _ in remote_answers]
    assert statuses == [(route, status, cache) for route, status, cache, _ in local_answers]
    assert [status for _, status, _ in statuses] == [200, 200, 200, 200, 200, 200, 429]
    assert statuses[2][2] == "hit" and statuses[0][2] == "miss"
    for (route, _, _, local_body), (_, _, _, remote_body) in zip(
        local_answers, remote_answers, strict=True
    ):
        assert_close(local_body, remote_body, route)
    embeddings = remote_answers[1][3]["data"]
    assert len(embeddings) == 32 and len(embeddings[0]["embedding"]) == 1024
    assert remote_rows == local_rows and len(remote_rows) == len(request_script())
    assert remote_rows[-1][2] == "quota_exceeded"

    pieces = needles()
    assert files_holding(before, snapshot(watched), pieces) == []
    logged = "".join(worker.output)
    assert not any(piece.decode("latin-1") in logged for piece in pieces[1::3])
