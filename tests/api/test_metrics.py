"""GET /metrics: Prometheus text for the configured token only, with request and model figures
and never a per-account label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support.api import Api
from support.samples import photo_jpeg

TOKEN = "metrics-token-for-tests-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_without_a_configured_token_do_not_exist(api: Api) -> None:
    response = await api.client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    with_guess = await api.client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert with_guess.status_code == 404


async def test_metrics_need_the_token(api_factory: Callable[..., Any]) -> None:
    async with api_factory(metrics_token=TOKEN) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await api.client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
        # An API key is not the metrics token either.
        key = api.new_key()
        response = await api.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401


async def test_metrics_count_requests_images_decode_failures_and_batches(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(metrics_token=TOKEN) as api:
        key = api.new_key()
        auth = {"Authorization": f"Bearer {key}"}
        # The model registry is shared by the test session: its counters start where others left.
        model = (("model", "dupify-visual-1"),)
        before = await api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        images_before = _samples(before.text).get(("dupify_model_images_total", model), 0.0)
        for _ in range(2):
            ok = await api.client.post(
                "/v1/embeddings",
                content=photo_jpeg("chelsea"),
                headers={**auth, "Content-Type": "image/jpeg"},
            )
            assert ok.status_code == 200, ok.text
        bad = await api.client.post(
            "/v1/embeddings",
            content=b"\xff\xd8\xff not really a jpeg",
            headers={**auth, "Content-Type": "image/jpeg"},
        )
        assert bad.status_code == 422
        unauthenticated = await api.client.post("/v1/embeddings", content=b"x")
        assert unauthenticated.status_code == 401

        response = await api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)
        route = (("method", "POST"), ("route", "/v1/embeddings"))
        assert samples[("dupify_http_requests_total", (*route, ("status", "200")))] == 2
        assert samples[("dupify_http_requests_total", (*route, ("status", "422")))] == 1
        assert samples[("dupify_http_requests_total", (*route, ("status", "401")))] == 1
        assert samples[("dupify_http_request_duration_seconds_count", route)] == 4
        assert samples[("dupify_images_processed_total", (("route", "/v1/embeddings"),))] == 2
        # The same photo twice: the second is answered by the result cache.
        assert samples[("dupify_result_cache_lookups_total", (("result", "miss"),))] == 1
        assert samples[("dupify_result_cache_lookups_total", (("result", "hit"),))] == 1
        assert samples[("dupify_decode_failures_total", (("code", "invalid_image"),))] == 1
        # One image reached the model: the second request was a cache hit, the third undecodable.
        assert samples[("dupify_model_images_total", model)] == images_before + 1
        assert samples[("dupify_model_batch_size_count", model)] >= 1
        assert ("dupify_model_queue_depth", model) in samples

        label_names = {name for _, labels in samples for name, _ in labels}
        assert label_names <= {"method", "route", "status", "code", "result", "model", "le"}
        assert key not in response.text
        assert "acct_" not in response.text and "key_" not in response.text


async def test_a_made_up_method_is_counted_as_other_not_as_a_new_label(
    api_factory: Callable[..., Any],
) -> None:
    """Labels come from a fixed set: a client cannot add series (memory, forever) at will."""
    async with api_factory(metrics_token=TOKEN) as api:
        for n in range(3):
            await api.client.request(f"PROBE{n}", "/v1/models")
        response = await api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "PROBE" not in response.text
    methods = {
        dict(labels)["method"]
        for name, labels in _samples(response.text)
        if name == "dupify_http_requests_total"
    }
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "other"}
