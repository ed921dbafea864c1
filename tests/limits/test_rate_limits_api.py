"""API section 1 rate limits through the app: headers on every authenticated response, the
6th request in a minute refused at a limit of 5, and 200 concurrent requests admitting 50."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from support.samples import noise_png

EXPECTED_HEADERS = (
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


async def test_headers_count_down_and_the_sixth_request_is_refused(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend, plans={"free": {"requests_per_minute": 5}}) as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        for remaining in (4, 3, 2, 1, 0):
            response = await api.client.get("/v1/models", headers=auth)
            assert response.status_code == 200, response.text
            reset = int(response.headers["X-RateLimit-Reset"])
            assert 1 <= reset <= 60
            assert response.headers["X-RateLimit-Limit"] == "5"
            assert response.headers["X-RateLimit-Remaining"] == str(remaining)
            assert response.headers["RateLimit-Policy"] == '"minute";q=5;w=60'
            assert response.headers["RateLimit"] == f'"minute";r={remaining};t={reset}'
            assert "Retry-After" not in response.headers
        sixth = await api.client.get("/v1/models", headers=auth)
        assert sixth.status_code == 429
        error = sixth.json()["error"]
        assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")
        assert 1 <= int(sixth.headers["Retry-After"]) <= 60
        assert sixth.headers["X-RateLimit-Remaining"] == "0"
        assert sixth.headers["Retry-After"] == sixth.headers["X-RateLimit-Reset"]
        # The limit is per key: another key (of another account) is untouched.
        other = {"Authorization": f"Bearer {api.new_key()}"}
        fresh = await api.client.get("/v1/models", headers=other)
        assert fresh.status_code == 200 and fresh.headers["X-RateLimit-Remaining"] == "4"


async def test_errors_after_authentication_carry_the_headers_too(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend, plans={"free": {"requests_per_minute": 50}}) as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        narrow = {"Authorization": f"Bearer {api.new_key(scopes=['analyze'])}"}
        responses = [
            await api.client.post(
                "/v1/embeddings",
                content=b"\xff\xd8\xffnot a jpeg",
                headers={**auth, "Content-Type": "image/jpeg"},
            ),
            await api.client.post("/v1/embeddings", json={"input": "!!"}, headers=auth),
            await api.client.post(
                "/v1/embeddings",
                json={"input": "AAAA", "model": "no-such-model"},
                headers=auth,
            ),
            await api.client.post("/v1/embeddings", json={"input": "AAAA"}, headers=narrow),
            await api.client.get("/v1/usage?start=yesterday", headers=auth),
        ]
        assert [response.status_code for response in responses] == [422, 400, 404, 403, 400]
        for response in responses:
            for header in EXPECTED_HEADERS:
                assert header in response.headers, (response.status_code, header)
        assert [r.headers["X-RateLimit-Remaining"] for r in responses[:3]] == ["49", "48", "47"]
        anonymous = await api.client.post("/v1/embeddings", json={"input": "AAAA"})
        assert anonymous.status_code == 401
        assert "X-RateLimit-Limit" not in anonymous.headers  # not authenticated: no key to count


async def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend, plans={"free": {"requests_per_minute": 50}}) as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        responses = await asyncio.gather(
            *(api.client.get("/v1/models", headers=auth) for _ in range(200))
        )
        statuses = [response.status_code for response in responses]
        assert statuses.count(200) == 50
        assert statuses.count(429) == 150
        admitted = sorted(
            int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200
        )
        assert admitted == list(range(50))
        await api.flush_usage()


async def test_an_image_request_counts_once_whatever_its_size(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend, plans={"free": {"requests_per_minute": 3}}) as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        batch = [base64.b64encode(noise_png(32, 32, seed)).decode() for seed in range(4)]
        first = await api.client.post("/v1/embeddings", json={"input": batch}, headers=auth)
        assert first.status_code == 200, first.text
        assert first.headers["X-RateLimit-Remaining"] == "2"
