"""Issue 12: the worker validates a job as strictly as the API validates a request (anyone with
the endpoint's key can send one): wrong shapes, huge arrays, unknown models, garbage base64 and
deflate bombs are refused with a clear error, in both forms, and the worker keeps serving."""

from __future__ import annotations

import base64
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from dupify.inference.wire import RAW, encode_job
from support.workers import FORMS, Worker, start_worker

VISUAL = "dupify-visual-1"
SHAPE = [224, 224, 3]


@pytest.fixture(scope="module", params=FORMS)
def worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    running = start_worker(request.param, tmp_path_factory.mktemp(f"bad-{request.param}"))
    yield running
    running.kill()


def good_job(count: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    tensors = [rng.integers(-120, 130, size=SHAPE).astype(np.float32) for _ in range(count)]
    return encode_job(VISUAL, tensors)


def bad_jobs() -> dict[str, tuple[object, str]]:
    """Each bad input, and a piece of the error that must name what is wrong with it."""
    job = good_job()
    bomb = base64.b64encode(zlib.compress(b"\0" * (64 * 1024 * 1024), 9)).decode()
    nan = np.full([1, *SHAPE], np.nan, dtype=np.float32)
    return {
        "a field missing": ({k: v for k, v in job.items() if k != "codec"}, "missing ['codec']"),
        "an unknown field": ({**job, "extra": 1}, "unexpected ['extra']"),
        "another version": ({**job, "v": 2}, "unsupported payload version"),
        "an unknown model": ({**job, "model": "gpt-image-9"}, "unknown model 'gpt-image-9'"),
        "a wrong shape": ({**job, "shape": [3, 224, 224]}, "shape must be [224, 224, 3]"),
        "a huge array": ({**job, "shape": [4096, 4096, 3]}, "shape must be"),
        "another dtype": ({**job, "dtype": "int64"}, "dtype must be float32"),
        "a huge count": ({**job, "count": 100_000}, "count must be an integer from 1 to 256"),
        "a count the data lacks": ({**job, "count": 2}, "does not hold exactly"),
        "garbage base64": ({**job, "data": "%%%not base64%%%"}, "not valid base64"),
        "not deflate data": ({**job, "data": base64.b64encode(b"x" * 999).decode()}, "deflate"),
        "a deflate bomb": ({**job, "data": bomb}, "does not hold exactly"),
        "an unknown codec": ({**job, "codec": "pickle"}, "codec must be one of"),
        "NaN values": (
            {**job, "codec": RAW, "data": base64.b64encode(nan.tobytes()).decode()},
            "NaN or infinite",
        ),
        "raw data too short": ({**job, "codec": RAW, "data": "AAAA"}, "expected 602112"),
    }


def post(worker: Worker, job_input: object) -> dict[str, Any]:
    response = httpx.post(f"{worker.url}/runsync", json={"input": job_input}, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_bad_job_is_refused_clearly_and_the_worker_keeps_serving(worker: Worker) -> None:
    not_an_object = httpx.post(f"{worker.url}/runsync", json={"input": [1, 2, 3]}, timeout=60)
    if worker.form == "serve":
        assert not_an_object.json()["error"] == "invalid job: input must be a JSON object"
    else:  # the SDK's server refuses it before the handler, naming the field
        assert not_an_object.status_code == 422 and "input" in not_an_object.text
    for name, (job_input, expected) in bad_jobs().items():
        body = post(worker, job_input)
        assert body["status"] == "FAILED", name
        assert body["error"].startswith("invalid job: "), (name, body["error"])
        assert expected in body["error"], (name, body["error"])
        assert "Traceback" not in body["error"]
    answer = post(worker, good_job(3))
    assert answer["status"] == "COMPLETED"
    assert answer["output"]["count"] == 3
    embedding = answer["output"]["outputs"]["embedding"]
    assert embedding["shape"] == [3, 1024]
    vectors = np.frombuffer(base64.b64decode(embedding["data"]), dtype="<f4").reshape(3, 1024)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert worker.process is not None and worker.process.poll() is None


def test_the_job_server_refuses_malformed_requests_and_wrong_keys(tmp_path: Path) -> None:
    worker = start_worker("serve", tmp_path, DUPIFY_RUNPOD__API_KEY="worker-test-key")
    try:
        good = {"Authorization": "Bearer worker-test-key"}
        assert httpx.post(f"{worker.url}/runsync", json={"input": good_job()}).status_code == 401
        wrong = {"Authorization": "Bearer worker-test-kez"}
        response = httpx.post(f"{worker.url}/runsync", json={"input": good_job()}, headers=wrong)
        assert response.status_code == 401
        assert httpx.post(f"{worker.url}/runsync", content=b"{", headers=good).status_code == 400
        no_input = httpx.post(f"{worker.url}/runsync", json={"inputs": 1}, headers=good)
        assert no_input.status_code == 400 and "input" in no_input.json()["error"]
        huge = httpx.post(f"{worker.url}/runsync", content=b" " * (25 << 20), headers=good)
        assert huge.status_code == 413
        assert httpx.get(f"{worker.url}/status/job-nope", headers=good).status_code == 404
        assert httpx.get(f"{worker.url}/runsync", headers=good).status_code == 405
        queued = httpx.post(f"{worker.url}/run", json={"input": good_job(2)}, headers=good).json()
        assert queued["status"] in ("IN_QUEUE", "IN_PROGRESS")
        for _ in range(600):  # followed as the remote backend does, until it ends
            status = httpx.get(f"{worker.url}/status/{queued['id']}", headers=good).json()
            if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                break
            time.sleep(0.05)
        assert status["status"] == "COMPLETED" and status["output"]["count"] == 2
        # Delivered once, then gone: the worker keeps no result it has handed over.
        assert httpx.get(f"{worker.url}/status/{queued['id']}", headers=good).status_code == 404
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.kill()
