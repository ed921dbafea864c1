"""Images by URL through the real HTTP API: the same answers as uploads, per-image errors where
the route has them, the cache keyed on content, usage counted, and no URL kept anywhere.

The image servers run on 127.0.0.1 (let through by `ALLOW`); test host names resolve through a
`FixedResolver`, and the network dials loopback only (support.image_server)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dupify.config import ImageUrlSettings, MiB
from dupify.images.fetch import UrlFetcher
from support.api import ApiContext
from support.fixtures import UNLIMITED_PLANS
from support.image_server import FixedResolver, ImageServer, RecordingNetwork, Route
from support.samples import photo_jpeg
from support.stored import object_bytes, stored_values

TOKEN = "sig-9f8e7d6c5b4a"  # a secret some image URLs carry in their query


METRICS_TOKEN = "metrics-token-for-url-tests-0123456789"


def url_api(
    api_factory: Callable[..., ApiContext], resolver: FixedResolver | None = None, **settings: Any
) -> tuple[ApiContext, RecordingNetwork]:
    url_settings = ImageUrlSettings(**{"allow": ["127.0.0.1"], "allow_http": True, **settings})
    network = RecordingNetwork()
    fetcher = UrlFetcher(
        url_settings, 10 * MiB, resolver=resolver or FixedResolver({}), network=network
    )
    context = api_factory(
        image_urls=url_settings,
        url_fetcher=fetcher,
        plans=UNLIMITED_PLANS,
        metrics_token=METRICS_TOKEN,
    )
    return context, network


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_url_gives_the_same_vector_as_the_same_bytes_uploaded(
    api_factory: Callable[..., ApiContext],
) -> None:
    cat, coffee = photo_jpeg("chelsea"), photo_jpeg("coffee")
    async with ImageServer(
        {"/cat.jpg": Route(body=cat), "/coffee.jpg": Route(body=coffee)}
    ) as server:
        context, _ = url_api(api_factory)
        async with context as api:
            auth = {"Authorization": f"Bearer {api.new_key()}"}
            uploaded = await api.client.post(
                "/v1/embeddings", json={"input": [b64(cat), b64(coffee)]}, headers=auth
            )
            mixed = await api.client.post(
                "/v1/embeddings",
                json={"input": [server.url(f"/cat.jpg?token={TOKEN}"), b64(coffee)]},
                headers=auth,
            )
    assert uploaded.status_code == mixed.status_code == 200, mixed.text
    # Cached on content, not on the URL: the fetched bytes hit what the upload stored.
    assert mixed.headers["X-Cache"] == "hit" and mixed.json()["usage"]["cached_images"] == 2
    for first, second in zip(uploaded.json()["data"], mixed.json()["data"], strict=True):
        np.testing.assert_allclose(first["embedding"], second["embedding"], atol=1e-6)


async def test_fresh_url_vectors_equal_upload_vectors(
    api_factory: Callable[..., ApiContext],
) -> None:
    cat = photo_jpeg("chelsea")
    async with ImageServer({"/cat.jpg": Route(body=cat)}) as server:
        for form in ("url", "upload"):
            context, _ = url_api(api_factory)
            async with context as api:  # a new app each time: an empty cache
                auth = {"Authorization": f"Bearer {api.new_key()}"}
                item = server.url("/cat.jpg") if form == "url" else b64(cat)
                response = await api.client.post(
                    "/v1/embeddings", json={"input": item}, headers=auth
                )
                assert response.status_code == 200 and response.headers["X-Cache"] == "miss"
                if form == "url":
                    by_url = np.asarray(response.json()["data"][0]["embedding"])
                else:
                    by_upload = np.asarray(response.json()["data"][0]["embedding"])
    np.testing.assert_allclose(by_url, by_upload, atol=1e-5)


async def test_analyze_answers_each_url_on_its_own(api_factory: Callable[..., ApiContext]) -> None:
    cat = photo_jpeg("chelsea")
    routes = {"/cat.jpg": Route(body=cat), "/page": Route(body=b"<p>", content_type="text/html")}
    async with ImageServer(routes) as server:
        resolver = FixedResolver({"metadata.test": ["169.254.169.254"]})
        context, network = url_api(api_factory, resolver)
        async with context as api:
            response = await api.client.post(
                "/v1/analyze",
                json={
                    "input": [
                        server.url("/cat.jpg"),
                        server.url("/missing.jpg"),
                        "https://metadata.test/latest/meta-data/",
                        server.url("/page"),
                    ],
                    "features": ["hashes"],
                },
                headers={"Authorization": f"Bearer {api.new_key()}"},
            )
    assert response.status_code == 200, response.text
    body = response.json()
    first, missing, metadata, page = body["results"]
    assert "hashes" in first and "error" not in first
    assert missing["error"]["code"] == "url_bad_status" and missing["error"]["param"] == "input[1]"
    assert (
        metadata["error"]["code"] == "url_forbidden" and "metadata" in metadata["error"]["message"]
    )
    assert page["error"]["code"] == "invalid_image"
    assert body["usage"]["images"] == 1  # only what was analysed is billed
    assert network.refused_dials == [] and "/latest/meta-data/" not in server.paths


@pytest.mark.parametrize(
    ("route", "code", "status"),
    [
        (Route(status=404, content_type="text/plain"), "url_bad_status", 422),
        (Route(body=b"<html></html>", content_type="text/html"), "invalid_image", 422),
        (Route(body=b"GIF89a-not-really"), "invalid_image", 422),
    ],
)
async def test_a_failing_url_is_the_error_of_single_answer_routes(
    api_factory: Callable[..., ApiContext], route: Route, code: str, status: int
) -> None:
    cat = photo_jpeg("chelsea", size=(96, 64))
    async with ImageServer({"/bad": route, "/cat.jpg": Route(body=cat)}) as server:
        context, _ = url_api(api_factory)
        async with context as api:
            auth = {"Authorization": f"Bearer {api.new_key()}"}
            embed = await api.client.post(
                "/v1/embeddings",
                json={"input": [server.url("/cat.jpg"), server.url("/bad")]},
                headers=auth,
            )
            compare = await api.client.post(
                "/v1/compare",
                json={"a": server.url("/cat.jpg"), "b": server.url("/bad")},
                headers=auth,
            )
    for response, param in ((embed, "input[1]"), (compare, "b")):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param)


async def test_a_forbidden_url_is_a_400_and_nothing_is_dialled(
    api_factory: Callable[..., ApiContext],
) -> None:
    resolver = FixedResolver({"intranet.test": ["10.0.0.1"]})
    context, network = url_api(api_factory, resolver, allow=[])
    cat = Route(body=photo_jpeg("chelsea"))
    async with ImageServer({"/cat.jpg": cat}) as server, context as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        responses = [
            await api.client.post("/v1/embeddings", json={"input": url}, headers=auth)
            for url in (
                "https://intranet.test/cat.jpg",
                server.url("/cat.jpg"),  # 127.0.0.1, not on the (now empty) allow list
                "https://169.254.169.254/latest/meta-data/",
                "https://user:pw@images.example.com/cat.jpg",
            )
        ]
        metrics = await api.client.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
    # Operators see the refusals by rule (someone probing the network shows up here).
    for rule in ("private", "loopback", "metadata", "userinfo"):
        sample = f'dupify_image_url_fetches_total{{outcome="url_forbidden",rule="{rule}"}} 1.0'
        assert sample in metrics.text
    for response, rule in zip(
        responses, ("private", "loopback", "metadata", "userinfo"), strict=True
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "url_forbidden" and f"(rule: {rule})" in error["message"]
        assert error["param"] == "input"
    assert server.requests == [] and network.dials == [] and network.refused_dials == []


async def test_32_urls_in_one_request_respect_the_concurrency_limit(
    api_factory: Callable[..., ApiContext],
) -> None:
    jpeg = photo_jpeg("chelsea", size=(64, 48))
    routes = {f"/{i}.jpg": Route(body=jpeg, delay_s=0.05) for i in range(32)}
    async with ImageServer(routes) as server:
        context, _ = url_api(api_factory, per_request=4)
        async with context as api:
            response = await api.client.post(
                "/v1/embeddings",
                json={"input": [server.url(f"/{i}.jpg") for i in range(32)]},
                headers={"Authorization": f"Bearer {api.new_key()}"},
            )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 32
    assert len(server.requests) == 32 and server.most_in_flight == 4


async def test_urls_are_never_logged_or_stored_and_fetched_bytes_are_counted(
    api_factory: Callable[..., ApiContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cat = photo_jpeg("chelsea")
    async with ImageServer({"/cat.jpg": Route(body=cat)}) as server:
        url = server.url(f"/cat.jpg?token={TOKEN}")
        context, _ = url_api(api_factory)
        async with context as api:
            auth = {"Authorization": f"Bearer {api.new_key()}"}
            ok = await api.client.post("/v1/embeddings", json={"input": url}, headers=auth)
            refused = await api.client.post(
                "/v1/analyze", json={"input": [server.url(f"/gone?token={TOKEN}")]}, headers=auth
            )
            await api.flush_usage()
            assert ok.status_code == 200 and refused.status_code == 200
            stored = b"".join(stored_values(api))
            cached = b"".join(object_bytes(api.app.state.runtime.cache))
            with api.engine.connect() as connection:
                from sqlalchemy import text

                bytes_in = connection.execute(
                    text("SELECT bytes_in FROM request_logs WHERE endpoint = 'POST /v1/embeddings'")
                ).scalar_one()
    assert bytes_in == len(ok.request.content) + len(cat)
    for haystack in (stored, cached, caplog.text.encode(), refused.content, ok.content):
        assert TOKEN.encode() not in haystack and b"/cat.jpg" not in haystack


async def test_a_request_over_its_quota_fetches_nothing(
    api_factory: Callable[..., ApiContext],
) -> None:
    url_settings = ImageUrlSettings(allow=["127.0.0.1"], allow_http=True)
    network = RecordingNetwork()
    fetcher = UrlFetcher(url_settings, 10 * MiB, resolver=FixedResolver({}), network=network)
    plans = {"free": {"requests_per_minute": 1000, "images_per_month": 1}}
    async with ImageServer({"/cat.jpg": Route(body=photo_jpeg("chelsea"))}) as server:
        context = api_factory(image_urls=url_settings, url_fetcher=fetcher, plans=plans)
        async with context as api:
            auth = {"Authorization": f"Bearer {api.new_key()}"}
            two = [server.url("/cat.jpg"), server.url("/cat.jpg?again")]
            for route, body in (
                ("/v1/embeddings", {"input": two}),
                ("/v1/analyze", {"input": two}),
                ("/v1/compare", {"a": two[0], "b": two[1]}),
                ("/v1/duplicates", {"input": two}),
            ):
                response = await api.client.post(route, json=body, headers=auth)
                assert response.status_code == 429, (route, response.text)
                assert response.json()["error"]["code"] == "quota_exceeded"
    # The quota is reserved before any URL is fetched: nothing reached the image server.
    assert server.requests == [] and network.dials == []
