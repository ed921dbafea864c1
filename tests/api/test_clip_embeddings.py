"""/v1/embeddings and /v1/models with operator models (the real loader on small exports):
images and texts in one space, `dimensions`, base64, caps on text, billing, the cache, and no
text stored anywhere."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from dupify.api.texts import looks_like_image
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import ModelRegistry
from support.api import ApiContext
from support.clip_api import colour, post, vectors
from support.onnx_builders import COLOURS, DIMENSIONS, solid_embedding, write_exports


@pytest.fixture
def clip_app(
    api_factory: Callable[..., ApiContext], registry_clip: ModelRegistry, backend_clip: LocalBackend
) -> Callable[..., ApiContext]:
    def build(**overrides: Any) -> ApiContext:
        return api_factory(registry=registry_clip, backend=backend_clip, **overrides)

    return build


UNLIMITED = {"free": {"requests_per_minute": 100_000, "images_per_month": 100_000}}


def unit(rgb: tuple[int, int, int]) -> np.ndarray:
    vector = solid_embedding(rgb)
    return vector / np.linalg.norm(vector)


async def test_models_lists_the_declared_models(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app() as api:
        response = await api.client.get(
            "/v1/models", headers={"Authorization": f"Bearer {api.new_key()}"}
        )
    assert response.status_code == 200
    listed = {model["id"]: model for model in response.json()["data"]}
    assert set(listed) == {"tiny-clip", "tiny-clip-one", "tiny-dino"}
    assert {k: listed["tiny-clip"][k] for k in ("task", "dimensions", "modalities", "version")} == {
        "task": "clip",
        "dimensions": DIMENSIONS,
        "modalities": ["image", "text"],
        "version": "1",
    }
    assert (listed["tiny-dino"]["task"], listed["tiny-dino"]["modalities"]) == (
        "embedding",
        ["image"],
    )
    assert listed["tiny-dino"]["dimensions"] == 6


async def test_images_and_texts_embed_into_one_space(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app(plans=UNLIMITED) as api:
        key = api.new_key()
        green_uri = "data:image/png;base64," + colour("green")
        payload = {
            "model": "tiny-clip",
            "input": [colour("red"), "red", "A photo of a blue.", green_uri],
        }
        response = await post(api, key, "/v1/embeddings", payload)
        assert response.status_code == 200, response.text
        body = response.json()
        found = vectors(body)
        assert found.shape == (4, DIMENSIONS)
        assert np.linalg.norm(found, axis=1) == pytest.approx([1] * 4, abs=1e-5)
        assert [item["index"] for item in body["data"]] == [0, 1, 2, 3]
        # The red image and the word "red" have the same vector (how the exports are built).
        np.testing.assert_allclose(found[0], unit(COLOURS["red"]), atol=1e-5)
        np.testing.assert_allclose(found[1], found[0], atol=1e-5)
        np.testing.assert_allclose(found[2], unit(COLOURS["blue"]), atol=1e-5)
        np.testing.assert_allclose(found[3], unit(COLOURS["green"]), atol=1e-5)
        usage = body["usage"]
        assert (usage["images"], usage["texts"], usage["cached_images"]) == (2, 2, 0)
        assert usage["prompt_tokens"] == usage["total_tokens"] == 1 + 6
        assert response.headers["X-Cache"] == "miss"

        # The same text twice: the same vector, the second time from the cache.
        again = await post(api, key, "/v1/embeddings", {"model": "tiny-clip", "input": "red"})
        assert again.status_code == 200 and again.headers["X-Cache"] == "hit"
        assert again.json()["usage"]["cached_images"] == 1
        np.testing.assert_array_equal(vectors(again.json())[0], found[1])
        # Another account: the cache is per account.
        other = await post(
            api, api.new_key(), "/v1/embeddings", {"model": "tiny-clip", "input": "red"}
        )
        assert other.headers["X-Cache"] == "miss"
        np.testing.assert_array_equal(vectors(other.json())[0], found[1])

        # The one-file layout gives the same space.
        one = await post(
            api, key, "/v1/embeddings", {"model": "tiny-clip-one", "input": payload["input"]}
        )
        assert one.status_code == 200, one.text
        np.testing.assert_allclose(vectors(one.json()), found, atol=1e-5)


async def test_dimensions_and_base64(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app(plans=UNLIMITED) as api:
        key = api.new_key()
        full = vectors(
            (await post(api, key, "/v1/embeddings", {"input": ["cat", colour("blue")]})).json()
        )
        response = await post(
            api,
            key,
            "/v1/embeddings",
            {"input": ["cat", colour("blue")], "dimensions": 3, "encoding_format": "base64"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "tiny-clip"  # the default model of this app
        for item, vector in zip(body["data"], full, strict=True):
            decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            np.testing.assert_allclose(decoded, vector[:3] / np.linalg.norm(vector[:3]), atol=1e-6)
        too_many = await post(api, key, "/v1/embeddings", {"input": "cat", "dimensions": 9})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"


async def test_bad_text_requests_get_documented_errors(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app(plans=UNLIMITED) as api:
        key = api.new_key()
        cases: list[tuple[dict[str, Any], int, str, str]] = [
            ({"input": ["cat", ""]}, 400, "invalid_request", "input[1]"),
            ({"input": "   "}, 400, "invalid_request", "input"),
            ({"input": "x" * 100_000}, 400, "text_too_long", "input"),
            ({"input": ["a dog"] * 65}, 400, "too_many_texts", "input"),
            ({"input": []}, 400, "invalid_request", "input"),
            ({"input": ["cat", 3]}, 400, "invalid_request", "input"),
            ({"input": "data:text/plain,hello"}, 400, "invalid_request", "input"),
            ({"input": "a red car", "model": "nope"}, 404, "model_not_found", "model"),
        ]
        for payload, status, code, param in cases:
            response = await post(api, key, "/v1/embeddings", {"model": "tiny-clip", **payload})
            error = response.json()["error"]
            assert (response.status_code, error["code"], error["param"]) == (status, code, param), (
                payload,
                response.text,
            )
        # Text to an image-only model: every string is an image there, and this is none.
        for item, status, code in (
            ("a red car!", 400, "invalid_request"),
            ("a cat", 422, "invalid_image"),
        ):
            response = await post(api, key, "/v1/embeddings", {"model": "tiny-dino", "input": item})
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
            if status == 400:  # the message says why: text, to a model without a text tower
                assert "tiny-dino embeds images only" in response.json()["error"]["message"]
        dino = await post(
            api, key, "/v1/embeddings", {"model": "tiny-dino", "input": colour("red")}
        )
        assert dino.status_code == 200 and len(vectors(dino.json())[0]) == 6


async def test_a_text_counts_as_one_image_of_the_quota(clip_app: Callable[..., ApiContext]) -> None:
    async with clip_app(plans={"free": {"images_per_month": 4}}) as api:
        key = api.new_key()
        first = await post(api, key, "/v1/embeddings", {"input": ["cat", "dog", colour("red")]})
        assert first.status_code == 200, first.text
        second = await post(api, key, "/v1/embeddings", {"input": ["cat", "tree"]})
        assert (second.status_code, second.json()["error"]["code"]) == (429, "quota_exceeded")
        third = await post(api, key, "/v1/embeddings", {"input": "cat"})  # cached, still billed
        assert third.status_code == 200
        usage = await api.client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
        assert usage.json()["plan"]["images_used"] == 4, usage.text


async def test_a_text_query_is_stored_nowhere(clip_app: Callable[..., ApiContext]) -> None:
    marker = "zebra crossing at midnight qwxz"
    async with clip_app(plans=UNLIMITED) as api:
        key = api.new_key()
        response = await post(api, key, "/v1/embeddings", {"input": [marker, marker.upper()]})
        assert response.status_code == 200
        await api.flush_usage()
        with api.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM request_logs")).all()
        assert rows and marker not in repr(rows) and marker.upper() not in repr(rows)
        cache = api.app.state.runtime.cache
        entries = getattr(cache, "_entries", {})
        assert len(entries) == 2
        for stored_key, (value, _) in entries.items():
            for needle in (marker, marker.upper()):
                assert needle.encode() not in value and needle not in stored_key
            assert len(value) == DIMENSIONS * 4  # a float32 vector and nothing else


def test_the_exports_stay_small(tmp_path: Path) -> None:
    """The test models are a few KB each, built in the run (no download)."""
    exports = write_exports(tmp_path)
    sizes = [path.stat().st_size for path in exports.folder.rglob("*") if path.is_file()]
    assert sizes and max(sizes) < 16_000


def test_how_a_string_is_told_to_be_an_image_or_a_text() -> None:
    def encoded(fmt: str) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, format=fmt)
        return base64.b64encode(buffer.getvalue()).decode()

    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP"):
        assert looks_like_image(encoded(fmt)), fmt
        wrapped = encoded(fmt)
        assert looks_like_image("\n".join(wrapped[i : i + 76] for i in range(0, len(wrapped), 76)))
    for image in ("https://example.com/a.jpg", "http://x/y", "data:image/png;base64,AAAA"):
        assert looks_like_image(image)
    texts = [
        "a red bicycle",
        "cat",
        "SGVsbG8gd29ybGQ=",  # base64 of "Hello world": not an image
        "A" * 200,
        "iVBORw0KGgo is how a PNG starts",
        "/9j/ and spaces",
        "httpbin",
        "日本の猫",
    ]
    for item in texts:
        assert not looks_like_image(item), item
