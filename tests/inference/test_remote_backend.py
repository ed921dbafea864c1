"""Issue 12: `RemoteBackend` against an endpoint speaking RunPod's job protocol on 127.0.0.1 (the
real worker core behind a scripted stand-in for RunPod's cloud): queued jobs followed and
answered exactly, every failure a 503 `inference_unavailable` with Retry-After, jobs past their
deadline or left by their caller cancelled, the breaker, the local fallback, batching, payload
splits; and the wire codec and the breaker on their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from dupify.config import InferenceSettings, RunpodSettings, Settings
from dupify.errors import ApiError
from dupify.inference.backend import LocalBackend
from dupify.inference.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from dupify.inference.models import visual
from dupify.inference.models.base import text_tower_id
from dupify.inference.registry import ModelRegistry
from dupify.inference.remote import RemoteBackend
from dupify.inference.wire import SHUFFLED, decode_job, decode_outputs, encode_job, encode_outputs
from dupify.worker.core import WorkerCore
from support.clip_api import clip_registry
from support.fake_runpod import FakeEndpoint, running_fake
from support.samples import sample_photos

MODEL = visual.VisualModel.id
PHOTOS = [rgb for _, rgb in sample_photos(6)]
# What a remote backend is sent; the local backend is handed the photos' pixels themselves.
TENSORS = [visual.preprocess(rgb) for rgb in PHOTOS]


@pytest.fixture(scope="module")
def fake(registry: ModelRegistry) -> Iterator[FakeEndpoint]:
    settings = Settings(_env_file=None, inference=InferenceSettings(intra_op_threads=1))  # type: ignore[call-arg]
    core = WorkerCore(settings, registry)
    with running_fake(core) as endpoint:
        yield endpoint


def remote(fake: FakeEndpoint, fallback: str = "none", **settings: Any) -> RemoteBackend:
    fake.requests.clear()
    options = {"endpoint_url": fake.url, "api_key": "rp-test-key", "timeout_s": 20, **settings}
    inference = InferenceSettings(intra_op_threads=1, fallback=fallback)  # type: ignore[arg-type]
    registry: ModelRegistry = fake.core.registry
    return RemoteBackend(registry, inference, RunpodSettings(**options))


@pytest.fixture
async def started() -> AsyncIterator[list[RemoteBackend]]:
    backends: list[RemoteBackend] = []
    yield backends
    for backend in backends:
        await backend.stop()


async def start(backends: list[RemoteBackend], backend: RemoteBackend) -> RemoteBackend:
    await backend.start()
    backends.append(backend)
    return backend


async def local_rows(backend: LocalBackend, count: int) -> list[Any]:
    return await backend.infer(MODEL, PHOTOS[:count])


def assert_same(rows: list[Any], expected: list[Any]) -> None:
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(row[key], want[key], atol=1e-5, rtol=0)


async def test_a_queued_job_is_followed_on_status_and_answered_exactly(
    fake: FakeEndpoint, backend: LocalBackend, started: list[RemoteBackend]
) -> None:
    fake.mode = "queued"
    client = await start(started, remote(fake))
    rows = await client.infer(MODEL, TENSORS[:3])
    assert_same(rows, await local_rows(backend, 3))
    assert fake.seen("POST", "/runsync") and len(fake.seen("GET", "/status/")) >= 2
    assert {auth for _, _, auth in fake.requests} == {"Bearer rp-test-key"}
    # RunPod deletes the job, input included, when its TTL ends: the deadline plus a margin.
    assert 10_000 <= fake.policies[-1]["ttl"] <= 20_000 + 5_000
    assert not fake.seen("POST", "/cancel/")


@pytest.mark.parametrize("mode", ["429", "500", "failed", "malformed"])
async def test_every_remote_failure_is_a_503_with_retry_after(
    fake: FakeEndpoint, started: list[RemoteBackend], mode: str
) -> None:
    fake.mode = mode
    client = await start(started, remote(fake, retry_after_s=7))
    with pytest.raises(ApiError) as raised:
        await client.infer(MODEL, TENSORS[:2])
    assert raised.value.code == "inference_unavailable" and raised.value.status == 503
    assert raised.value.headers["Retry-After"] == "7"


async def until(condition: Any) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def test_a_job_past_its_deadline_is_cancelled_and_opens_the_breaker(
    fake: FakeEndpoint, started: list[RemoteBackend]
) -> None:
    fake.mode = "queued-forever"
    client = await start(started, remote(fake, timeout_s=1, breaker_reset_s=600))
    with pytest.raises(ApiError) as raised:
        await client.infer(MODEL, TENSORS[:1])
    assert raised.value.code == "inference_unavailable" and "Retry-After" in raised.value.headers
    await until(lambda: fake.seen("POST", "/cancel/"))
    [job_id] = [path.rsplit("/", 1)[1] for path in fake.seen("POST", "/cancel/")]
    assert f"/status/{job_id}" in fake.seen("GET", "/status/")
    # One lost deadline opened the breaker: the next call is refused without reaching RunPod.
    assert client.breaker.state == OPEN and client.state == "runpod (open)"
    sent = len(fake.requests)
    with pytest.raises(ApiError) as refused:
        await client.infer(MODEL, TENSORS[:1])
    assert refused.value.code == "inference_unavailable"
    assert int(refused.value.headers["Retry-After"]) > 500
    assert len(fake.requests) == sent


async def test_a_hanging_endpoint_costs_one_deadline_then_fails_fast(
    fake: FakeEndpoint, started: list[RemoteBackend]
) -> None:
    fake.mode = "hang"
    client = await start(started, remote(fake, timeout_s=1, breaker_reset_s=600))
    outcomes = await asyncio.gather(
        *(client.infer(MODEL, TENSORS[:1]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ApiError) and o.code == "inference_unavailable" for o in outcomes)
    sent = len(fake.seen("POST", "/runsync"))
    for _ in range(5):
        with pytest.raises(ApiError):
            await client.infer(MODEL, TENSORS[:1])
    assert len(fake.seen("POST", "/runsync")) == sent


async def test_a_caller_that_leaves_cancels_its_job(
    fake: FakeEndpoint, started: list[RemoteBackend]
) -> None:
    fake.mode = "queued-forever"
    client = await start(started, remote(fake, timeout_s=60))
    call = asyncio.create_task(client.infer(MODEL, TENSORS[:2]))
    await until(lambda: fake.seen("GET", "/status/"))
    call.cancel()
    await until(lambda: fake.seen("POST", "/cancel/"))
    assert client.breaker.state == CLOSED  # a client leaving is not the endpoint's failure


async def test_the_local_fallback_answers_while_the_remote_is_down_then_the_remote_returns(
    fake: FakeEndpoint, backend: LocalBackend, started: list[RemoteBackend]
) -> None:
    fake.mode = "500"
    client = await start(
        started, remote(fake, fallback="local", breaker_failures=2, breaker_reset_s=0.3)
    )
    expected = await local_rows(backend, 2)
    for _ in range(4):
        assert_same(await client.infer(MODEL, TENSORS[:2]), expected)
    # Two failed jobs opened the breaker; the calls after them never reached the endpoint.
    assert len(fake.seen("POST", "/runsync")) == 2
    assert client.state == "runpod (open; fallback local)"
    fake.mode = "ok"
    await until(lambda: client.breaker.state == HALF_OPEN)
    assert_same(await client.infer(MODEL, TENSORS[:2]), expected)
    assert client.breaker.state == CLOSED and len(fake.seen("POST", "/runsync")) == 3


async def test_concurrent_calls_share_jobs_and_big_batches_are_split_under_the_cap(
    fake: FakeEndpoint, backend: LocalBackend, started: list[RemoteBackend]
) -> None:
    fake.mode = "ok"
    client = await start(started, remote(fake, max_wait_ms=200, max_batch=16))
    answers = await asyncio.gather(*(client.infer(MODEL, [tensor]) for tensor in TENSORS))
    assert_same([rows[0] for rows in answers], await local_rows(backend, 6))
    assert len(fake.seen("POST", "/runsync")) < len(TENSORS)

    # About 140 KB of base64 an image: a 400 KB cap lets at most two travel in one job.
    small = await start(started, remote(fake, max_payload_bytes=400_000))
    assert_same(await small.infer(MODEL, TENSORS), await local_rows(backend, 6))
    assert len(fake.seen("POST", "/runsync")) >= 3
    assert small.stats()[MODEL].items == 6


def test_the_wire_codec_is_lossless_both_ways() -> None:
    job = encode_job(MODEL, TENSORS[:3])
    assert job["codec"] == SHUFFLED and len(job["data"]) < 3 * 602_112
    model_id, batch = decode_job(
        job, lambda m: ((224, 224, 3), "float32") if m == MODEL else None, 8
    )
    assert model_id == MODEL and np.array_equal(batch, np.stack(TENSORS[:3]))
    outputs = {"embedding": np.random.default_rng(1).random((3, 8), dtype=np.float32)}
    rows = decode_outputs(encode_outputs(MODEL, outputs, 3), MODEL, 3)
    assert all(
        np.array_equal(row["embedding"], outputs["embedding"][i]) for i, row in enumerate(rows)
    )


def test_the_breaker_opens_probes_once_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_s=10, probe_timeout_s=30, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow() and breaker.retry_after() == 10
    now[0] = 10.5
    assert breaker.state == HALF_OPEN and breaker.allow() and not breaker.allow()
    breaker.failure()  # the probe failed: open again, for a whole reset period
    assert breaker.state == OPEN and breaker.retry_after() == 10
    now[0] = 21
    assert breaker.allow()
    now[0] = 52  # that probe's call was abandoned: after the probe timeout another may probe
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure(trip=True)
    assert breaker.state == OPEN


@pytest.mark.parametrize(
    ("url", "allow_http", "refused"),
    [
        ("https://api.runpod.ai/v2/abc123", False, False),
        ("http://127.0.0.1:8010", False, False),
        ("http://localhost:8010", False, False),
        ("http://10.0.0.7:8010", False, True),
        ("http://10.0.0.7:8010", True, False),
        ("ftp://10.0.0.7/", True, True),
    ],
)
def test_images_leave_for_another_machine_only_over_tls_unless_allowed(
    registry: ModelRegistry, url: str, allow_http: bool, refused: bool
) -> None:
    settings = RunpodSettings(endpoint_url=url, allow_http=allow_http)
    if refused:
        with pytest.raises(ValueError, match="DUPIFY_RUNPOD__"):
            RemoteBackend(registry, InferenceSettings(), settings)
    else:
        RemoteBackend(registry, InferenceSettings(), settings)  # nothing is sent at construction


async def test_a_text_towers_token_rows_travel_as_int64_and_answer_exactly(
    tmp_path_factory: pytest.TempPathFactory, started: list[RemoteBackend]
) -> None:
    registry = clip_registry(tmp_path_factory.mktemp("clip"))
    settings = Settings(_env_file=None, inference=InferenceSettings(intra_op_threads=1))  # type: ignore[call-arg]
    tower = text_tower_id("tiny-clip")
    encoder = registry.get("tiny-clip").text_encoder
    assert encoder is not None
    rows = encoder.tokenize(["a red square", "blue"])
    job = encode_job(tower, rows)
    assert job["dtype"] == "int64"
    local = LocalBackend(registry, InferenceSettings(intra_op_threads=1))
    await local.start()
    try:
        expected = await local.infer(tower, rows)
        with running_fake(WorkerCore(settings, registry)) as endpoint:
            client = await start(started, remote(endpoint))
            assert_same(await client.infer(tower, rows), expected)
            assert endpoint.seen("POST", "/runsync")
    finally:
        await local.stop()
