"""Zero-shot labels in /v1/analyze and POST /v1/rank with an operator's CLIP-like model (the
real loader on small exports whose colour words embed exactly like solid images of them)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from dupify.inference.backend import LocalBackend
from dupify.inference.registry import ModelRegistry
from support.api import ApiContext
from support.clip_api import colour, post

UNLIMITED = {"free": {"requests_per_minute": 100_000, "images_per_month": 100_000}}


@pytest.fixture
def clip_app(
    api_factory: Callable[..., ApiContext], registry_clip: ModelRegistry, backend_clip: LocalBackend
) -> Callable[..., ApiContext]:
    def build(**overrides: Any) -> ApiContext:
        return api_factory(
            registry=registry_clip, backend=backend_clip, plans=UNLIMITED, **overrides
        )

    return build


async def test_zero_shot_labels_rank_the_matching_label_first(
    clip_app: Callable[..., ApiContext],
) -> None:
    async with clip_app() as api:
        key = api.new_key()
        # The operator's default labels model and label set (the models file).
        default = await post(
            api,
            key,
            "/v1/analyze",
            {"input": [colour("red"), colour("blue")], "features": ["labels"], "top_k": 3},
        )
        assert default.status_code == 200, default.text
        body = default.json()
        assert body["models"] == {"labels": "tiny-clip@1"}
        assert [result["labels"][0]["label"] for result in body["results"]] == ["red", "blue"]
        scores = [label["score"] for label in body["results"][0]["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and scores[0] > 0.9
        assert body["usage"] == {"images": 2, "cached_images": 0}

        # A request's own labels, with a named model; each label is billed as one unit.
        payload = {
            "input": colour("green"),
            "features": ["labels", "colors"],
            "labels_model": "tiny-clip-one",
            "candidate_labels": ["cat", "blue", "green", "house"],
        }
        own = await post(api, key, "/v1/analyze", payload)
        assert own.status_code == 200, own.text
        result = own.json()["results"][0]
        assert [label["label"] for label in result["labels"]][:1] == ["green"]
        assert len(result["labels"]) == 4 and "colors" in result
        assert own.json()["usage"] == {"images": 1, "cached_images": 0, "texts": 4}
        assert own.json()["models"] == {"labels": "tiny-clip-one@1"}
        again = await post(api, key, "/v1/analyze", payload)
        assert (
            again.headers["X-Cache"] == "hit" and again.json()["results"] == own.json()["results"]
        )
        other_set = await post(api, key, "/v1/analyze", {**payload, "candidate_labels": ["cat"]})
        assert other_set.headers["X-Cache"] == "miss"
        assert other_set.json()["results"][0]["labels"] == [{"label": "cat", "score": 1.0}]

        # The same as a form: labels comma-separated.
        form = await api.client.post(
            "/v1/analyze",
            data={
                "features": "labels",
                "labels_model": "tiny-clip",
                "candidate_labels": "dog,green",
            },
            files={"file": ("g.png", base64.b64decode(colour("green")), "image/png")},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert form.status_code == 200, form.text
        assert form.json()["results"][0]["labels"][0]["label"] == "green"


async def test_bad_label_requests_get_documented_errors(
    clip_app: Callable[..., ApiContext],
) -> None:
    async with clip_app() as api:
        key = api.new_key()
        image = colour("red")
        cases: list[tuple[dict[str, Any], int, str, str]] = [
            (
                {"candidate_labels": [f"l{i}" for i in range(65)]},
                400,
                "invalid_request",
                "candidate_labels",
            ),
            ({"candidate_labels": ["x" * 201]}, 400, "invalid_request", "candidate_labels.0"),
            ({"candidate_labels": [""]}, 400, "invalid_request", "candidate_labels.0"),
            ({"labels_model": "tiny-dino"}, 400, "text_not_supported", "labels_model"),
            ({"labels_model": "nope"}, 404, "model_not_found", "labels_model"),
        ]
        for options, status, code, param in cases:
            response = await post(
                api, key, "/v1/analyze", {"input": image, "features": ["labels"], **options}
            )
            error = response.json()["error"]
            assert (response.status_code, error["code"], error["param"]) == (status, code, param), (
                options,
                response.text,
            )


async def test_rank_orders_images_by_a_text_and_texts_by_an_image(
    clip_app: Callable[..., ApiContext],
) -> None:
    async with clip_app() as api:
        key = api.new_key()
        images = [colour(name) for name in ("red", "green", "blue", "white")]
        by_text = await post(
            api,
            key,
            "/v1/rank",
            {"model": "tiny-clip", "query": "a photo of a blue.", "documents": images},
        )
        assert by_text.status_code == 200, by_text.text
        body = by_text.json()
        assert body["object"] == "rank" and body["model"] == "tiny-clip"
        assert body["results"][0] == {"index": 2, "score": pytest.approx(1.0, abs=1e-5)}
        scores = [result["score"] for result in body["results"]]
        assert sorted(result["index"] for result in body["results"]) == [0, 1, 2, 3]
        assert scores == sorted(scores, reverse=True)
        assert body["usage"] == {"images": 4, "texts": 1, "cached_images": 0}

        by_image = await post(
            api,
            key,
            "/v1/rank",
            {
                "model": "tiny-clip",
                "query": colour("green"),
                "documents": ["red", "cat", "green"],
                "top_n": 2,
            },
        )
        assert by_image.status_code == 200, by_image.text
        results = by_image.json()["results"]
        assert len(results) == 2 and results[0]["index"] == 2
        # The green image was a document of the first call: cached, per input.
        assert by_image.json()["usage"] == {"images": 1, "texts": 3, "cached_images": 1}


async def test_bad_rank_requests(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app() as api:
        key = api.new_key()
        cases: list[tuple[dict[str, Any], int, str]] = [
            (
                {"model": "tiny-dino", "query": "cat", "documents": ["dog"]},
                400,
                "text_not_supported",
            ),
            ({"model": "tiny-clip", "query": "cat", "documents": []}, 400, "invalid_request"),
            (
                {"model": "tiny-clip", "query": "cat", "documents": ["d"] * 65},
                400,
                "invalid_request",
            ),
            ({"model": "tiny-clip", "query": "", "documents": ["dog"]}, 400, "invalid_request"),
            (
                {"model": "tiny-clip", "query": "x" * 100_000, "documents": ["d"]},
                400,
                "text_too_long",
            ),
            ({"model": "nope", "query": "cat", "documents": ["dog"]}, 404, "model_not_found"),
        ]
        for payload, status, code in cases:
            response = await post(api, key, "/v1/rank", payload)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), (
                payload,
                response.text,
            )
