"""PRIVACY.md rows 4 and 6 through the app: the result cache (miss then hit, per account, per
image in batches, TTL) and the monthly image quota counted from the request log."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import redis
from sqlalchemy import select

from dupify.accounts.models import Account
from dupify.db import session_factory, transaction, utcnow
from dupify.usage.models import RequestLog
from support.api import Api
from support.samples import noise_png, photo_jpeg


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def model_items(api: Api) -> int:
    return api.app.state.runtime.backend.stats()["dupify-visual-1"].items  # type: ignore[no-any-return]


async def embed(api: Api, key: str, images: list[bytes], **options: Any) -> Any:
    return await api.client.post(
        "/v1/embeddings",
        json={"input": [b64(image) for image in images], **options},
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_same_image_twice_is_a_miss_then_a_hit_without_running_the_model(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    photo = photo_jpeg("coffee", size=(128, 96))
    async with api_factory(**cache_backend) as api:
        mine, theirs = api.new_key(), api.new_key()
        before = model_items(api)
        first = await embed(api, mine, [photo])
        assert first.status_code == 200, first.text
        assert first.headers["X-Cache"] == "miss"
        assert model_items(api) == before + 1
        second = await embed(api, mine, [photo])
        assert second.headers["X-Cache"] == "hit"
        assert second.json()["usage"] == {
            "prompt_tokens": 0,
            "total_tokens": 0,
            "images": 1,
            "cached_images": 1,
        }
        assert model_items(api) == before + 1  # the model did not run for the hit
        assert second.json()["data"] == first.json()["data"]
        # A cached full vector serves a truncated request too.
        short = await embed(api, mine, [photo], dimensions=64)
        assert short.headers["X-Cache"] == "hit"
        full = np.asarray(first.json()["data"][0]["embedding"], dtype=np.float32)
        expected = full[:64] / np.linalg.norm(full[:64])
        np.testing.assert_allclose(short.json()["data"][0]["embedding"], expected, atol=1e-6)
        # Another account sending the same bytes never sees this account's entry.
        other = await embed(api, theirs, [photo])
        assert other.headers["X-Cache"] == "miss"
        assert model_items(api) == before + 2


async def test_a_batch_is_cached_per_image_and_logs_cached_images(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    seen, new = noise_png(48, 48, seed=1), noise_png(48, 48, seed=2)
    async with api_factory(**cache_backend) as api:
        key = api.new_key()
        assert (await embed(api, key, [seen])).headers["X-Cache"] == "miss"
        before = model_items(api)
        batch = await embed(api, key, [new, seen, new])
        assert batch.status_code == 200, batch.text
        assert batch.headers["X-Cache"] == "partial"
        assert batch.json()["usage"]["images"] == 3
        assert batch.json()["usage"]["cached_images"] == 1
        assert model_items(api) == before + 1  # only the new image reached the model, once
        vectors = [row["embedding"] for row in batch.json()["data"]]
        assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
        again = await embed(api, key, [new, seen])
        assert again.headers["X-Cache"] == "hit"
        usage = await api.client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
        row = usage.json()["data"][0]
        assert (row["endpoint"], row["requests"], row["images"], row["cached_images"]) == (
            "POST /v1/embeddings",
            3,
            6,
            3,
        )


async def test_an_entry_older_than_the_ttl_is_gone(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    photo = noise_png(40, 40, seed=5)
    # A TTL long enough that the second request lands inside it even on a loaded machine.
    async with api_factory(**cache_backend, cache={"ttl": 1.5}) as api:
        key = api.new_key()
        assert (await embed(api, key, [photo])).headers["X-Cache"] == "miss"
        assert (await embed(api, key, [photo])).headers["X-Cache"] == "hit"
        await asyncio.sleep(1.8)
        assert (await embed(api, key, [photo])).headers["X-Cache"] == "miss"


async def test_redis_holds_results_with_a_ttl_and_no_image_or_account_id(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    if not cache_backend:
        pytest.skip(
            "the embedded cache's contents are searched by tests/privacy/test_disk_watch.py"
        )
    photo = photo_jpeg("chelsea", size=(96, 96))
    async with api_factory(**cache_backend) as api:
        key = api.new_key(email="cache-owner@example.com")
        assert (await embed(api, key, [photo])).status_code == 200
        with transaction(session_factory(api.engine)) as session:
            account_id = session.scalar(
                select(Account.id).where(Account.email == "cache-owner@example.com")
            )
        assert account_id
        client = redis.Redis.from_url(cache_backend["redis_url"])
        prefix = cache_backend["redis"]["key_prefix"]
        entries = list(client.scan_iter(match=f"{prefix}:cache:*"))
        assert len(entries) == 1
        value = client.get(entries[0])
        assert value is not None and len(value) == 1024 * 4  # one float32 vector, nothing else
        assert photo[100:164] not in value
        ttl_ms = client.pttl(entries[0])
        assert 0 < ttl_ms <= 24 * 3600 * 1000
        for name in client.scan_iter(match=f"{prefix}:*"):
            assert account_id.encode() not in name and b"cache-owner" not in name
            assert client.pttl(name) > 0
        client.close()


async def test_a_quota_of_10_images_refuses_the_request_that_would_exceed_it(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    images = [noise_png(32, 32, seed=10 + index) for index in range(6)]
    async with api_factory(**cache_backend, plans={"free": {"images_per_month": 10}}) as api:
        key = api.new_key()
        assert (await embed(api, key, images[:4])).status_code == 200
        assert (await embed(api, key, images[2:6])).status_code == 200  # cached ones count too
        broken = await embed(api, key, [b"\xff\xd8\xff broken"])
        assert broken.status_code == 422  # a failed request gives its reservation back
        refused = await embed(api, key, images[:3])
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "X-RateLimit-Remaining" in refused.headers
        assert (await embed(api, key, images[:2])).status_code == 200
        last = await embed(api, key, images[:1])
        assert last.status_code == 429 and last.json()["error"]["code"] == "quota_exceeded"
        usage = await api.client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
        assert usage.status_code == 200, usage.text
        plan = usage.json()["plan"]
        assert (plan["images_per_month"], plan["images_used"], plan["images_left"]) == (10, 10, 0)
        assert usage.json()["totals"]["images"] == 10


async def test_the_quota_is_seeded_from_the_request_log(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend, plans={"free": {"images_per_month": 10}}) as api:
        key = api.new_key(email="seeded@example.com")
        now = utcnow()
        with transaction(session_factory(api.engine)) as session:
            account_id = session.scalar(
                select(Account.id).where(Account.email == "seeded@example.com")
            )
            for created_at, images in (
                (now - timedelta(minutes=5), 9),
                (now.replace(day=1) - timedelta(days=2), 50),
            ):
                session.add(
                    RequestLog(
                        request_id="req_earlier",
                        created_at=created_at,
                        account_id=account_id,
                        key_id=None,
                        endpoint="POST /v1/embeddings",
                        status=200,
                        error_code=None,
                        latency_ms=10.0,
                        images=images,
                        cached_images=0,
                        bytes_in=0,
                    )
                )
        assert (await embed(api, key, [noise_png(32, 32, seed=40)])).status_code == 200
        refused = await embed(api, key, [noise_png(32, 32, seed=41)])
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
