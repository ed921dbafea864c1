"""The `InferenceBackend` contract, through the HTTP API: a backend that takes image bytes gives
the same vectors as one that takes tensors, and a per-image error or an overload means the same
thing whichever backend answers."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from dupify.config import ImageLimits
from dupify.errors import ApiError
from dupify.images.decoding import decode_image
from dupify.inference.backend import InferenceBackend, InputKind, ModelInput
from dupify.inference.batcher import Rows
from dupify.inference.registry import ModelRegistry
from dupify.pipeline.pipeline import Pipeline
from support.api import Api, ApiContext
from support.backends import PassThroughBackend
from support.samples import photo_jpeg

IMAGES = [photo_jpeg("chelsea"), photo_jpeg("rocket", quality=70)]
ENCODED = [base64.b64encode(data).decode() for data in IMAGES]


@dataclass
class DecodingBackend(PassThroughBackend):
    """Takes the uploads' bytes, as a remote worker would, and keeps the contract: the same
    decode at the model's working side, then the real models, whose local backend runs the
    same preprocessing (it takes pixels)."""

    registry: ModelRegistry | None = None

    @property
    def inputs(self) -> InputKind:
        return "images"

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        assert self.registry is not None
        model = self.registry.get(model_id)
        assert self.inner.inputs == "pixels"
        decoded: list[ModelInput] = []
        for item in items:
            assert isinstance(item, bytes), "a backend taking images gets the upload's bytes"
            decoded.append(decode_image(item, ImageLimits(), model.working_side).pixels)
        return await self.inner.infer(model_id, decoded)


class RefusesTheSecondImage(PassThroughBackend):
    """Answers the second item of every call with an error of its own, as a remote worker that
    could not read one image would."""

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        rows = await self.inner.infer(model_id, items)
        refused = ApiError("invalid_image", "the inference worker could not read this image")
        return [refused if index == 1 else row for index, row in enumerate(rows)]


class Overloaded(PassThroughBackend):
    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        raise ApiError("overloaded", "every worker is busy", headers={"Retry-After": "7"})


async def embeddings_and_analysis(api: Api) -> tuple[httpx.Response, httpx.Response]:
    headers = {"Authorization": f"Bearer {api.new_key()}"}
    embedded = await api.client.post("/v1/embeddings", json={"input": ENCODED}, headers=headers)
    analysed = await api.client.post(
        "/v1/analyze",
        json={"input": ENCODED, "features": ["embedding", "labels", "safety"]},
        headers=headers,
    )
    return embedded, analysed


async def test_a_backend_taking_image_bytes_gives_the_same_answers(
    api_factory: Callable[..., ApiContext], backend: InferenceBackend, registry: ModelRegistry
) -> None:
    async with api_factory() as api:
        local_embedded, local_analysed = await embeddings_and_analysis(api)
    async with api_factory(backend=DecodingBackend(backend, registry)) as api:
        remote_embedded, remote_analysed = await embeddings_and_analysis(api)
    for local, remote in ((local_embedded, remote_embedded), (local_analysed, remote_analysed)):
        assert local.status_code == remote.status_code == 200, remote.text
        assert local.json() == remote.json()


async def test_an_image_the_backend_refuses_is_that_images_error(
    api_factory: Callable[..., ApiContext], backend: InferenceBackend
) -> None:
    async with api_factory(backend=RefusesTheSecondImage(backend)) as api:
        headers = {"Authorization": f"Bearer {api.new_key()}"}
        embedded, analysed = await embeddings_and_analysis(api)
        duplicates = await api.client.post(
            "/v1/duplicates", json={"input": ENCODED}, headers=headers
        )
    # Whole-request endpoints: the first bad image, named by its param, as a decode error is.
    for response in (embedded, duplicates):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_image", "input[1]")
    # analyze: that image's own entry; the other is answered and alone billed.
    body = analysed.json()
    assert analysed.status_code == 200
    assert set(body["results"][0]) == {"index", "labels", "safety", "embedding"}
    assert body["results"][1]["error"]["code"] == "invalid_image"
    assert body["results"][1]["error"]["param"] == "input[1]"
    assert body["usage"]["images"] == 1


async def test_an_overloaded_backend_answers_503_with_retry_after(
    api_factory: Callable[..., ApiContext], backend: InferenceBackend
) -> None:
    async with api_factory(backend=Overloaded(backend)) as api:
        embedded, analysed = await embeddings_and_analysis(api)
    for response in (embedded, analysed):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["error"]["code"] == "overloaded"


async def test_warm_up_runs_one_image_through_every_model(
    pipeline: Pipeline, backend: InferenceBackend
) -> None:
    before = {name: stats.items for name, stats in backend.stats().items()}
    await pipeline.warm_up()
    after = {name: stats.items for name, stats in backend.stats().items()}
    assert {name: after[name] - before[name] for name in after} == {
        "dupify-visual-1": 1,
        "dupify-semantic-1": 1,
        "dupify-copy-1": 1,
    }
