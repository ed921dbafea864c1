"""The pipeline asks the registry for models by role, never by a bundled id: an app whose
registry holds only a tiny generated model, in every role, answers every image endpoint."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from dupify.config import InferenceSettings
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import DEFAULT_ROLES, ModelRegistry
from dupify.inference.session import SessionPolicy
from support.api import ApiContext
from support.samples import photo_jpeg
from support.tiny_model import TinyModel


@pytest.fixture(scope="module")
async def tiny() -> AsyncIterator[tuple[ModelRegistry, LocalBackend]]:
    settings = InferenceSettings(intra_op_threads=1)
    model = TinyModel(SessionPolicy.from_settings(settings))
    registry = ModelRegistry(settings, models=[model], roles=dict.fromkeys(DEFAULT_ROLES, model.id))
    backend = LocalBackend(registry, settings)
    await backend.start()
    yield registry, backend
    await backend.stop()


async def test_every_endpoint_runs_on_whatever_model_the_registry_gives(
    api_factory: Callable[..., ApiContext], tiny: tuple[ModelRegistry, LocalBackend]
) -> None:
    registry, backend = tiny
    photos = [photo_jpeg("chelsea"), photo_jpeg("coffee")]
    encoded = [base64.b64encode(data).decode() for data in photos]
    async with api_factory(registry=registry, backend=backend) as api:
        headers = {"Authorization": f"Bearer {api.new_key()}"}
        models = await api.client.get("/v1/models", headers=headers)
        embedded = await api.client.post("/v1/embeddings", json={"input": encoded}, headers=headers)
        before = backend.stats()["tiny-test-1"].items
        analysed = await api.client.post(
            "/v1/analyze",
            json={"input": encoded, "features": ["labels", "safety", "hashes", "embedding"]},
            headers=headers,
        )
        analysed_images = backend.stats()["tiny-test-1"].items - before
        compared = await api.client.post(
            "/v1/compare", json={"a": encoded[0], "b": encoded[0]}, headers=headers
        )
        duplicates = await api.client.post(
            "/v1/duplicates", json={"input": [*encoded, encoded[1]]}, headers=headers
        )

    assert [entry["id"] for entry in models.json()["data"]] == ["tiny-test-1"]
    assert embedded.status_code == 200, embedded.text
    assert embedded.json()["model"] == "tiny-test-1"
    vectors = np.array([item["embedding"] for item in embedded.json()["data"]])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    assert analysed.status_code == 200, analysed.text
    body = analysed.json()
    assert body["models"] == {
        "labels": "tiny-labels@1",
        "safety": "tiny-safety@1",
        "embedding": "tiny-test-1",
    }
    for result, vector in zip(body["results"], vectors, strict=True):
        assert {label["label"] for label in result["labels"]} <= set(TinyModel.label_names)
        assert 0.0 <= result["safety"]["nsfw"] <= 1.0
        # The same float32 values (JSON writes each float32 as its shortest decimal).
        np.testing.assert_array_equal(
            np.asarray(result["embedding"], np.float32), vector.astype(np.float32)
        )
    assert analysed_images == 2  # one pass per image serves the embedding and both heads

    assert compared.status_code == 200, compared.text
    assert (compared.json()["model"], compared.json()["verdict"]) == (
        "tiny-test-1",
        "exact_duplicate",
    )
    assert duplicates.status_code == 200, duplicates.text
    assert duplicates.json()["model"] == "tiny-test-1"
    # The tiny model's thresholds mean nothing; only the copy's grouping with its image does.
    assert any({1, 2} <= set(group["indices"]) for group in duplicates.json()["groups"])
