"""orjson responses (dupify.server.json): float32 vectors written straight from NumPy mean the
same numbers as today's `JSONResponse` of the same answer, the JSON is valid, and what
`JSONResponse` refuses (NaN, infinities) is refused too."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from starlette.responses import JSONResponse

from dupify.server.json import VectorJSONResponse
from support.api import Api
from support.samples import photo_jpeg


def strict_json(body: bytes) -> Any:
    """Parse as strict JSON: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


async def test_real_embeddings_mean_the_same_through_orjson(unlimited: tuple[Api, str]) -> None:
    api, key = unlimited
    response = await api.client.post(
        "/v1/embeddings",
        content=photo_jpeg("coffee", size=(96, 64)),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    today = response.json()
    vectors = [np.asarray(item["embedding"], dtype=np.float32) for item in today["data"]]
    # The same answer with the vectors as float32 arrays, as a route would hand them over.
    fast = {
        **today,
        "data": [
            {**item, "embedding": vector}
            for item, vector in zip(today["data"], vectors, strict=True)
        ],
    }
    rendered = strict_json(VectorJSONResponse(fast).body)
    assert rendered.keys() == today.keys()
    for before, after in zip(today["data"], rendered["data"], strict=True):
        assert {k: v for k, v in before.items() if k != "embedding"} == {
            k: v for k, v in after.items() if k != "embedding"
        }
        old = np.asarray(before["embedding"], dtype=np.float64)
        new = np.asarray(after["embedding"], dtype=np.float64)
        assert old.shape == new.shape == (1024,)
        assert np.abs(old - new).max() <= 1e-6
        # Read back as float32 they are the very same numbers.
        assert np.array_equal(old.astype(np.float32), new.astype(np.float32))


def test_vectors_of_every_layout_round_trip() -> None:
    rng = np.random.default_rng(16)
    vector = rng.standard_normal(1024).astype(np.float32)
    vector /= np.linalg.norm(vector)
    layouts = {
        "native": vector,
        "big_endian": vector.astype(">f4"),
        "strided": np.repeat(vector, 2)[::2],
        "float64": vector.astype(np.float64),
        "float16": vector.astype(np.float16),
        "list": vector.tolist(),
    }
    body = VectorJSONResponse({name: value for name, value in layouts.items()}).body
    parsed = strict_json(body)
    slow = strict_json(JSONResponse({k: np.asarray(v).tolist() for k, v in layouts.items()}).body)
    for name in layouts:
        assert np.abs(np.asarray(parsed[name]) - np.asarray(slow[name])).max() <= 1e-6, name
    extras = {"n": np.int64(7), "x": np.float32(0.25), "text": "café", 3: None, "ok": True}
    assert strict_json(VectorJSONResponse(extras).body) == {
        "n": 7,
        "x": 0.25,
        "text": "café",
        "3": None,
        "ok": True,
    }


@pytest.mark.parametrize(
    "content",
    [
        {"score": float("nan")},
        {"vector": [0.5, float("inf")]},
        {"vector": np.array([0.5, np.nan], dtype=np.float32)},
        {"nested": [{"v": np.float32("-inf")}]},
    ],
)
def test_what_json_cannot_hold_is_refused(content: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        JSONResponse(json.loads(json.dumps(content, default=lambda a: a.tolist())))
    with pytest.raises(ValueError):
        VectorJSONResponse(content)


async def test_the_app_answers_with_it_by_default(unlimited: tuple[Api, str]) -> None:
    api, key = unlimited
    response = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = strict_json(response.content)
    assert any(model["id"] == "dupify-visual-1" for model in listed["data"])
