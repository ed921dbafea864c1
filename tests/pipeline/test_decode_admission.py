"""The pipeline's pre stage and the decoder's budgets: a call for an account is admitted on the
cost its headers declare before anything is decoded, the operator's own work (account None)
never is refused, and the decoder's own failure fails a call whole instead of blaming images."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dupify.config import ImageLimits
from dupify.errors import ApiError
from dupify.images.workers import Decoder
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from dupify.pipeline.features import DEFAULT_FEATURES, AnalysisOptions
from dupify.pipeline.pipeline import Pipeline, build_pipeline
from support.samples import noise_png

IMAGES = [noise_png(300, 200, seed=seed) for seed in (1, 2)]
# Each image above costs 300 * 200 * (3 + 8) = 660,000; two of them are over this.
TIGHT = ImageLimits(max_request_decode_bytes=1_000_000)


class WatchedDecoder(Decoder):
    """Counts the uploads sent to the workers; optionally answers each with `failure`."""

    def __init__(self, limits: ImageLimits, failure: ApiError | None = None) -> None:
        super().__init__(limits, workers=1)
        self.runs = 0
        self.failure = failure

    async def run(
        self, function: Any, *args: object, account: str | None = None, cost: int = 0
    ) -> Any:
        self.runs += 1
        if self.failure is not None:
            raise self.failure
        return await super().run(function, *args, account=account, cost=cost)


def pipeline_on(decoder: Decoder, registry: ModelRegistry, backend: LocalBackend) -> Pipeline:
    return build_pipeline(decoder, registry, backend, SessionPolicy(intra_op_threads=2))


@pytest.fixture
def tight_decoder() -> Iterator[WatchedDecoder]:
    decoder = WatchedDecoder(TIGHT)
    yield decoder
    decoder.close()


async def test_a_call_over_its_budget_is_refused_before_any_decode(
    tight_decoder: WatchedDecoder, registry: ModelRegistry, backend: LocalBackend
) -> None:
    pipeline = pipeline_on(tight_decoder, registry, backend)
    model = registry.models[0].id
    with pytest.raises(ApiError) as caught:
        await pipeline.embed_all(IMAGES, ["input[0]", "input[1]"], model, account="acct_1")
    assert (caught.value.code, caught.value.status) == ("request_too_complex", 422)
    assert tight_decoder.runs == 0
    [one] = await pipeline.embed_all(IMAGES[:1], ["input[0]"], model, account="acct_1")
    assert one.shape == (registry.models[0].dimensions,)


async def test_the_operators_own_work_is_never_refused_for_its_cost(
    tight_decoder: WatchedDecoder, registry: ModelRegistry, backend: LocalBackend
) -> None:
    pipeline = pipeline_on(tight_decoder, registry, backend)
    vectors = await pipeline.embed(IMAGES, registry.models[0].id, account=None)
    assert [vector.shape for vector in vectors] == [(registry.models[0].dimensions,)] * 2
    assert tight_decoder.runs == 2


async def test_the_decoders_own_failure_fails_the_call_whole(
    registry: ModelRegistry, backend: LocalBackend
) -> None:
    down = ApiError("decoder_unavailable", "stopped", headers={"Retry-After": "1"})
    decoder = WatchedDecoder(ImageLimits(), failure=down)
    try:
        pipeline = pipeline_on(decoder, registry, backend)
        options = AnalysisOptions(features=DEFAULT_FEATURES, embedding_model=registry.models[0].id)
        # analyze answers an image's own error in that image's entry; not the server's failure.
        with pytest.raises(ApiError) as caught:
            await pipeline.analyze(IMAGES, options, account="acct_1")
        assert caught.value.code == "decoder_unavailable"
        assert caught.value.headers == {"Retry-After": "1"}
    finally:
        decoder.close()
