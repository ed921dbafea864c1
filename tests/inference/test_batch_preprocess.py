"""Issue 16's batch path changed no tensor: each bundled model's `preprocess_batch` (what the
local backend's runners build a batch with, writing each image straight into it) equals, bit for
bit, the per-image recipe it replaced (each image preprocessed on its own, then stacked), on real
photos of every shape the decoder hands over; and the backend takes pixels only as they are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.backend import LocalBackend
from dupify.inference.models.base import FloatArray
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from support.samples import sample_photo
from support.tiny_model import TinyModel

Pixels = npt.NDArray[np.uint8]
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def _visual_recipe(pixels: Pixels) -> FloatArray:
    """dupify-visual-1 as it was preprocessed image by image: 256x256, centre 224, BGR - mean."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    square = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(square[16:240, 16:240, ::-1].astype(np.float32) - MEAN_BGR)


def _copy_recipe(pixels: Pixels) -> FloatArray:
    """dupify-copy-1's: the whole image at 256x256, BGR - mean."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    square = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(square[:, :, ::-1].astype(np.float32) - MEAN_BGR)


def _semantic_recipe(pixels: Pixels) -> FloatArray:
    """dupify-semantic-1's: the centre crop of the shorter-side-256 image, (x - 127) / 128, CHW."""
    height, width = pixels.shape[:2]
    half = 224 / 2 / (256 / min(width, height))
    box = (width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    crop = image.resize((224, 224), Image.Resampling.BILINEAR, box=box)
    normalised = (np.asarray(crop, dtype=np.float32) - np.float32(127.0)) * np.float32(1 / 128)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


RECIPES: dict[str, Callable[[Pixels], FloatArray]] = {
    "dupify-visual-1": _visual_recipe,
    "dupify-copy-1": _copy_recipe,
    "dupify-semantic-1": _semantic_recipe,
}


def _images() -> list[Pixels]:
    """What the decoder hands over: the 256 px working image of a square photo (taken as it is,
    with no resize), shorter side 256 either way, a larger photo, a strided view, a long strip
    and a single pixel."""
    coffee = sample_photo("coffee")  # 400 x 600
    square = np.asarray(Image.fromarray(sample_photo("astronaut")).resize((256, 256)))
    wide = np.asarray(Image.fromarray(coffee).resize((384, 256)))
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    strip = np.full((3, 2_000, 3), 180, dtype=np.uint8)
    return [square, wide, tall, coffee, coffee[::2, ::3], strip, np.zeros((1, 1, 3), np.uint8)]


@pytest.mark.parametrize("model_id", sorted(RECIPES))
def test_a_batch_is_the_per_image_recipe_bit_for_bit(
    registry: ModelRegistry, model_id: str
) -> None:
    model = registry.get(model_id)
    images = _images()
    batch = model.preprocess_batch(images)
    expected = np.stack([RECIPES[model_id](pixels) for pixels in images])
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, expected)
    # One image on its own (what a backend that takes tensors is sent) is the same tensor.
    np.testing.assert_array_equal(model.preprocess(images[1]), expected[1])


def test_a_model_without_a_batch_path_of_its_own_stacks_its_preprocess() -> None:
    """The base class's `preprocess_into` (an operator's models use it) is `preprocess`."""
    model = TinyModel(SessionPolicy(intra_op_threads=1))
    images = _images()
    np.testing.assert_array_equal(
        model.preprocess_batch(images), np.stack([model.preprocess(image) for image in images])
    )
    with pytest.raises(ValueError):
        model.preprocess_batch([np.zeros((4, 4), np.uint8)])


async def test_the_backend_takes_pixels_only_as_the_decoder_gives_them(
    registry: ModelRegistry,
) -> None:
    """A malformed item fails its own call before it is queued; the calls beside it are
    answered, their rows those of the slow path (a stacked `preprocess`)."""
    backend = LocalBackend(registry, InferenceSettings(max_wait_ms=20.0))
    model = registry.get("dupify-visual-1")
    good = _images()[:3]
    await backend.start()
    try:
        with pytest.raises(ValueError, match="uint8"):
            await backend.infer(model.id, [good[0], good[1].astype(np.float32)])
        outcomes = await backend.infer(model.id, good)
    finally:
        await backend.stop()
    alone = model.predict(np.stack([model.preprocess(pixels) for pixels in good]))
    for index, row in enumerate(outcomes):
        assert not isinstance(row, ApiError)
        np.testing.assert_allclose(row["embedding"], alone["embedding"][index], atol=1e-5)
