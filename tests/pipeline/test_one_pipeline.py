"""There is one image pipeline: the same images through `/v1/embeddings`, `/v1/analyze`, the
portal playground and `dupify embed` give bit-identical vectors, and an `InferenceBackend` test
double that counts its calls sees every image of every one of them."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dupify.cli.local import embed_files
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from dupify.inference.backend import InferenceBackend, ModelInput
from dupify.inference.batcher import Rows
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from dupify.pipeline.pipeline import build_pipeline
from support.api import ApiContext
from support.backends import PassThroughBackend
from support.portal import csrf_of, signed_in_member
from support.samples import photo_jpeg

MODEL = "dupify-visual-1"  # the default model: what every one of the four paths embeds with


@dataclass
class Call:
    model_id: str
    items: int
    rows: list[Rows | ApiError]


@dataclass
class CountingBackend(PassThroughBackend):
    """Passes every call to the real backend and keeps what went through."""

    calls: list[Call] = field(default_factory=list)

    async def infer(self, model_id: str, items: Sequence[ModelInput]) -> list[Rows | ApiError]:
        rows = await super().infer(model_id, items)
        self.calls.append(Call(model_id, len(items), rows))
        return rows

    def vectors_since(self, start: int, model_id: str = MODEL) -> list[npt.NDArray[np.float32]]:
        """The embeddings the backend gave for `model_id` in the calls from `start` on."""
        return [
            row["embedding"]
            for call in self.calls[start:]
            if call.model_id == model_id
            for row in call.rows
            if not isinstance(row, ApiError)
        ]


def images_run(backend: InferenceBackend) -> int:
    return sum(stats.items for stats in backend.stats().values())


async def test_every_path_gives_the_same_vectors_through_the_one_backend(
    api_factory: Callable[..., ApiContext],
    backend: InferenceBackend,
    decoder: Decoder,
    registry: ModelRegistry,
    tmp_path: Path,
) -> None:
    counting = CountingBackend(backend)
    images = [photo_jpeg("chelsea"), photo_jpeg("coffee", quality=75, size=(500, 300))]
    encoded = [base64.b64encode(data).decode() for data in images]
    ran_before = images_run(backend)
    async with api_factory(backend=counting) as api:
        headers = {"Authorization": f"Bearer {api.new_key()}"}

        embedded = await api.client.post("/v1/embeddings", json={"input": encoded}, headers=headers)
        assert embedded.status_code == 200, embedded.text
        assert embedded.json()["model"] == MODEL
        from_embeddings = np.array(
            [item["embedding"] for item in embedded.json()["data"]], dtype=np.float32
        )
        assert [(call.model_id, call.items) for call in counting.calls] == [(MODEL, 2)]

        start = len(counting.calls)
        analysed = await api.client.post(
            "/v1/analyze", json={"input": encoded, "features": ["embedding"]}, headers=headers
        )
        assert analysed.status_code == 200, analysed.text
        from_analyze = np.array(
            [result["embedding"] for result in analysed.json()["results"]], dtype=np.float32
        )
        assert [(call.model_id, call.items) for call in counting.calls[start:]] == [(MODEL, 2)]

        start = len(counting.calls)
        async with await signed_in_member(api) as member:
            page = await member.client.get("/playground")
            played = await member.client.post(
                "/playground",
                data={"csrf_token": csrf_of(page.text)},
                files={
                    "image_a": ("a.jpg", images[0], "image/jpeg"),
                    "image_b": ("b.jpg", images[1], "image/jpeg"),
                },
            )
        assert played.status_code == 200, played.text
        assert 'id="verdict">' in played.text
        # The analysis (safety on the default model, labels) and the comparison's fingerprints
        # (on the copy-detection descriptor, the fingerprint model).
        assert sorted((call.model_id, call.items) for call in counting.calls[start:]) == [
            ("dupify-copy-1", 2),
            ("dupify-semantic-1", 2),
            (MODEL, 2),
        ]
        from_playground = counting.vectors_since(start)

    start = len(counting.calls)
    folder = tmp_path / "photos"
    folder.mkdir()
    files = [folder / f"{index}.jpg" for index in range(len(images))]
    for path, data in zip(files, images, strict=True):
        path.write_bytes(data)
    local = build_pipeline(decoder, registry, counting, SessionPolicy(intra_op_threads=2))
    from_cli, outcome = await embed_files(local, files, MODEL, lambda done: None)
    assert outcome.paths == files and outcome.skipped == []
    assert [(call.model_id, call.items) for call in counting.calls[start:]] == [(MODEL, 2)]

    assert from_embeddings.shape == (2, 1024)
    assert len(from_playground) == 2  # the comparison's vectors are dupify-copy-1's
    for vectors in (from_analyze, from_playground, from_cli):
        np.testing.assert_array_equal(np.asarray(vectors), from_embeddings)
    # Nothing reached the models around the seam: every image run went through the double.
    assert images_run(backend) - ran_before == sum(call.items for call in counting.calls) == 12
