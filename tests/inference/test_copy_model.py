"""dupify-copy-1 on real photos: shape, unit norm, determinism, and flips and quarter turns."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from dupify.inference.models.base import EMBEDDING, ImageModel
from dupify.inference.models.copy import (
    CHANNELS,
    STAGE3_TENSOR,
    CopyModel,
    gem,
    preprocess,
    stage3_graph,
    whitening,
)
from dupify.inference.models.visual import OPEN_NSFW
from dupify.inference.registry import BUNDLED_MODELS
from dupify.inference.session import SessionPolicy
from support.samples import sample_photo

Pixels = npt.NDArray[np.uint8]
# Photos of different kinds (a portrait, a cat, a still life, a street, an object, a texture).
NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left", "rocket", "brick")


@pytest.fixture(scope="module")
def copy_model() -> CopyModel:
    return CopyModel(SessionPolicy(device="cpu", intra_op_threads=0))


@pytest.fixture(scope="module")
def photos() -> dict[str, Pixels]:
    return {name: sample_photo(name) for name in NAMES}


def _embed(model: CopyModel, images: list[Pixels]) -> npt.NDArray[np.float32]:
    return np.asarray(model.predict(np.stack([model.preprocess(i) for i in images]))[EMBEDDING])


def test_is_a_bundled_image_model(copy_model: CopyModel) -> None:
    assert isinstance(copy_model, ImageModel)
    assert (copy_model.id, copy_model.version, copy_model.dimensions) == ("dupify-copy-1", "1", 512)
    assert (copy_model.input_shape, copy_model.working_side) == ((256, 256, 3), 256)
    assert BUNDLED_MODELS[CopyModel.id] is not None


def test_the_graph_stops_at_the_third_stage() -> None:
    full = onnx.load_model_from_string(OPEN_NSFW.read())
    cut, input_name = stage3_graph(OPEN_NSFW.read())
    graph = onnx.load_model_from_string(cut).graph
    assert [output.name for output in graph.output] == [STAGE3_TENSOR]
    assert input_name == graph.input[0].name
    assert len(graph.node) < len(full.graph.node)
    assert len(graph.initializer) < len(full.graph.initializer)


def test_the_shipped_whitening_is_512_square() -> None:
    mean, projection = whitening()
    assert mean.shape == (CHANNELS,) and projection.shape == (CHANNELS, CHANNELS)
    assert mean.dtype == projection.dtype == np.float32
    assert np.isfinite(projection).all()


def test_preprocess_keeps_the_whole_image(photos: dict[str, Pixels]) -> None:
    pixels = photos["motorcycle_left"]
    tensor = preprocess(pixels)
    assert tensor.shape == (256, 256, 3) and tensor.dtype == np.float32
    # Nothing is cropped: the left and right columns of the photo reach the tensor's edges.
    assert preprocess(pixels[:, ::-1]).tobytes() != tensor.tobytes()
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        preprocess(np.zeros((8, 8), np.uint8))


def test_gem_is_between_the_mean_and_the_max() -> None:
    maps = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    pooled = gem(maps)
    assert pooled.shape == (2, 3)
    assert (pooled >= maps.mean(axis=(2, 3)) - 1e-6).all()
    assert (pooled <= maps.max(axis=(2, 3)) + 1e-6).all()


def test_descriptors_are_unit_float32_and_deterministic(
    copy_model: CopyModel, photos: dict[str, Pixels]
) -> None:
    images = list(photos.values())
    first = _embed(copy_model, images)
    assert first.shape == (len(images), 512) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(_embed(copy_model, images), first)
    # One image alone gets the same descriptor as within a batch (up to float rounding).
    np.testing.assert_allclose(_embed(copy_model, images[:1])[0], first[0], atol=1e-4)
    assert copy_model.predict(np.zeros((0, 256, 256, 3), np.float32))[EMBEDDING].shape == (0, 512)


@pytest.mark.parametrize(
    "turn",
    [
        pytest.param(lambda p: p[:, ::-1], id="mirrored"),
        pytest.param(lambda p: np.rot90(p, 1), id="rotated 90"),
        pytest.param(lambda p: np.rot90(p, 2), id="rotated 180"),
        pytest.param(lambda p: np.rot90(p, 3), id="rotated 270"),
        pytest.param(lambda p: p[::-1], id="upside down"),
    ],
)
def test_flipped_and_turned_copies_match_their_photo_best(
    copy_model: CopyModel, photos: dict[str, Pixels], turn: object
) -> None:
    originals = _embed(copy_model, list(photos.values()))
    turned = _embed(
        copy_model,
        [np.ascontiguousarray(turn(p)) for p in photos.values()],  # type: ignore[operator]
    )
    cosine = turned @ originals.T
    for row, name in enumerate(photos):
        others = np.delete(cosine[row], row)
        assert cosine[row, row] > others.max(), (name, cosine[row].round(3).tolist())
