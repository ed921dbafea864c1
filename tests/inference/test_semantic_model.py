"""dupify-semantic-1: the torch-free weights reader, the built graph and its cache, labels, API."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import struct
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from dupify.analysis.vectors import top_labels
from dupify.config import InferenceSettings
from dupify.errors import ApiError
from dupify.inference.assets import AssetError
from dupify.inference.backend import LocalBackend
from dupify.inference.models.effnet_graph import (
    BUILDER_VERSION,
    build_effnet_lite0,
    cache_path,
    load_or_build,
    same_pads,
)
from dupify.inference.models.effnet_weights import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    WEIGHTS,
    load_bundled_state_dict,
    load_legacy_state_dict,
)
from dupify.inference.models.semantic import (
    LABELS_VERSION,
    PROBABILITIES,
    SemanticModel,
    imagenet_labels,
    preprocess,
)
from dupify.inference.registry import ModelRegistry, load_default_models
from dupify.inference.session import SessionPolicy
from support.api import Api
from support.samples import photo_jpeg, sample_photo

CATS = {"tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def semantic_model(tmp_path_factory: pytest.TempPathFactory) -> SemanticModel:
    return SemanticModel(
        SessionPolicy(intra_op_threads=2), cache_dir=tmp_path_factory.mktemp("model-cache")
    )


@pytest.fixture(scope="module")
def weights_bytes() -> bytes:
    return WEIGHTS.read()


def _labels_of(model: SemanticModel, name: str, k: int = 3) -> list[dict[str, object]]:
    outputs = model.predict(model.preprocess(sample_photo(name))[None])
    return top_labels(outputs[PROBABILITIES][0], model.label_names, k)


# --- the weights, read without torch --------------------------------------------------------


def test_state_dict_is_read_into_numpy_without_torch() -> None:
    weights, digest = load_bundled_state_dict()
    assert digest == WEIGHTS.sha256
    assert len(weights) == 296
    assert sum(array.size for array in weights.values()) == 4_694_073
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_conv_stem.weight"].dtype == np.float32
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64
    assert weights["_bn0.num_batches_tracked"].shape == ()
    assert all(array.flags.c_contiguous and array.flags.writeable for array in weights.values())
    assert "torch" not in sys.modules


def _legacy_file(state_pickle: bytes, header: tuple[object, ...] | None = None) -> bytes:
    """A legacy .pth whose state-dict pickle is `state_pickle`, with no storages after it."""
    magic, protocol, sys_info = header or (
        LEGACY_MAGIC,
        LEGACY_PROTOCOL,
        {"protocol_version": 1001, "little_endian": True},
    )
    parts = [pickle.dumps(value, protocol=2) for value in (magic, protocol, sys_info)]
    return b"".join([*parts, state_pickle, pickle.dumps([], protocol=2)])


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("__import__('os').getcwd()",))


def test_restricted_unpickler_refuses_code_in_the_state_dict(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    malicious = _legacy_file(pickle.dumps({"x": _RunsACommand(marker)}, protocol=2))
    with pytest.raises(AssetError, match=r"system, which is not allowed"):
        load_legacy_state_dict(malicious)
    assert not marker.exists()

    with pytest.raises(AssetError, match=r"\.eval, which is not allowed"):
        load_legacy_state_dict(_legacy_file(pickle.dumps(_CallsEval(), protocol=2)))


def test_restricted_unpickler_refuses_globals_in_the_header_and_bad_files(
    weights_bytes: bytes,
) -> None:
    with pytest.raises(AssetError, match="not allowed"):
        load_legacy_state_dict(_legacy_file(b"", header=(_CallsEval(), 1001, {})))
    with pytest.raises(AssetError, match="bad magic number"):
        load_legacy_state_dict(pickle.dumps(12345, protocol=2))
    with pytest.raises(AssetError, match="not a state dict"):
        load_legacy_state_dict(_legacy_file(pickle.dumps([1, 2, 3], protocol=2)))
    with pytest.raises(AssetError, match="ends inside"):
        load_legacy_state_dict(weights_bytes[: len(weights_bytes) // 2])
    with pytest.raises(AssetError, match="malformed weights pickle"):
        load_legacy_state_dict(b"\x80\x02garbage")


def test_weights_are_checked_against_their_pinned_digest(
    tmp_path: Path, weights_bytes: bytes
) -> None:
    altered = bytearray(weights_bytes)
    altered[-1] ^= 0xFF
    path = tmp_path / "altered.pth"
    path.write_bytes(bytes(altered))
    with pytest.raises(AssetError, match="sha256"):
        WEIGHTS.read(path)
    with pytest.raises(AssetError, match="cannot read"):
        WEIGHTS.read(tmp_path / "missing.pth")


def test_a_storage_element_count_that_disagrees_is_refused(weights_bytes: bytes) -> None:
    # Walk past the five pickles (magic, protocol, sys info, state dict, storage keys) with
    # pickletools, which parses opcodes without constructing anything; the first storage's
    # int64 element count comes next.
    stream = io.BytesIO(weights_bytes)
    for _ in range(5):
        for _opcode in pickletools.genops(stream):
            pass
    count_at = stream.tell()
    (count,) = struct.unpack_from("<q", weights_bytes, count_at)
    assert 0 < count <= 1000 * 1280  # no tensor is larger than the classifier's weight
    bad = bytearray(weights_bytes)
    struct.pack_into("<q", bad, count_at, count + 1)
    with pytest.raises(AssetError, match="elements"):
        load_legacy_state_dict(bytes(bad))


# --- the graph and its cache ------------------------------------------------------------------


def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_pads(224, 3, 2) == (0, 1, 112)
    assert same_pads(112, 5, 2) == (1, 2, 56)
    assert same_pads(14, 5, 1) == (2, 2, 14)
    assert same_pads(56, 3, 1) == (1, 1, 56)


def test_the_graph_build_is_deterministic(weights_bytes: bytes) -> None:
    weights = load_legacy_state_dict(weights_bytes)
    first = build_effnet_lite0(weights)
    assert build_effnet_lite0(load_legacy_state_dict(weights_bytes)) == first
    with pytest.raises(AssetError, match="not used by the graph"):
        build_effnet_lite0({**weights, "_extra.weight": np.zeros(1, dtype=np.float32)})
    del weights["_fc.bias"]
    with pytest.raises(AssetError, match=r"no tensor '_fc\.bias'"):
        build_effnet_lite0(weights)


def test_the_cache_is_named_by_checksum_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    graph, location = load_or_build(tmp_path)
    path = Path(location)
    assert path == cache_path(tmp_path, WEIGHTS.sha256)
    assert WEIGHTS.sha256[:16] in path.name and f"-b{BUILDER_VERSION}." in path.name
    sidecar = path.with_name(path.name + ".sha256")
    assert path.read_bytes() == graph
    assert sidecar.read_text().strip() == hashlib.sha256(graph).hexdigest()

    # Truncated (a crash mid-copy, a full disk): detected by the checksum, rebuilt, rewritten.
    path.write_bytes(graph[: len(graph) // 3])
    rebuilt, _ = load_or_build(tmp_path)
    assert rebuilt == graph and path.read_bytes() == graph

    # Same length, one byte flipped: still detected.
    flipped = bytearray(graph)
    flipped[len(flipped) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    assert load_or_build(tmp_path)[0] == graph

    # The sidecar lost: rebuilt rather than trusted.
    sidecar.unlink()
    assert load_or_build(tmp_path)[0] == graph and sidecar.is_file()

    # A model loads from what the cache now holds.
    model = SemanticModel(SessionPolicy(intra_op_threads=1), cache_dir=tmp_path)
    assert model.graph_path == str(path)


def test_an_unwritable_cache_still_gives_a_working_model(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("in the way")
    graph, _ = load_or_build(not_a_folder)
    assert graph == load_or_build(tmp_path / "fresh")[0]


# --- labels and embeddings --------------------------------------------------------------------


def test_imagenet_labels_are_project_data_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert all(label == label.strip() and label for label in labels)
    # Anchors across the range (the classifier's output order).
    assert labels[0] == "tench"
    assert labels[281] == "tabby cat"
    assert labels[285] == "Egyptian cat"
    assert labels[504] == "coffee mug"
    assert labels[759] == "reflex camera"
    assert labels[872] == "tripod"
    assert labels[967] == "espresso"
    assert labels[968] == "cup"
    assert labels[999] == "toilet paper"


def test_known_photos_get_their_known_labels(semantic_model: SemanticModel) -> None:
    chelsea = _labels_of(semantic_model, "chelsea")
    assert {item["label"] for item in chelsea} <= CATS
    coffee = _labels_of(semantic_model, "coffee", k=1)
    assert coffee[0]["label"] == "espresso"
    assert coffee[0]["score"] == pytest.approx(0.96, abs=0.02)
    camera = _labels_of(semantic_model, "camera")  # grayscale, stacked to RGB
    assert camera[0]["label"] in {"tripod", "reflex camera", "Polaroid camera"}
    # Other photos, other corners of the label list: a shifted list would fail these.
    assert _labels_of(semantic_model, "motorcycle_left", k=2)[0]["label"] in {
        "moped",
        "motor scooter",
    }
    assert {"missile", "projectile", "space shuttle"} & {
        str(item["label"]) for item in _labels_of(semantic_model, "rocket")
    }


def test_embeddings_are_unit_rows_and_batching_does_not_change_them(
    semantic_model: SemanticModel,
) -> None:
    names = ("chelsea", "coffee", "astronaut")
    batch = np.stack([semantic_model.preprocess(sample_photo(name)) for name in names])
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    outputs = semantic_model.predict(batch)
    embeddings, probabilities = outputs["embedding"], outputs[PROBABILITIES]
    assert embeddings.shape == (3, 1280) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert probabilities.shape == (3, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    single = semantic_model.predict(batch[1:2])["embedding"]
    np.testing.assert_allclose(single[0], embeddings[1], atol=1e-5)
    empty = semantic_model.predict(np.zeros((0, 3, 224, 224), dtype=np.float32))
    assert empty["embedding"].shape == (0, 1280) and empty[PROBABILITIES].shape == (0, 1000)


def test_preprocess_matches_resize_then_crop_and_handles_extreme_shapes() -> None:
    from PIL import Image

    photo = sample_photo("coffee")  # 400 x 600
    tensor = preprocess(photo)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
    # Reference: resize the whole photo (shorter side 256) then crop the centre 224.
    image = Image.fromarray(photo).resize((384, 256), Image.Resampling.BILINEAR)
    left, top = (384 - 224) // 2, (256 - 224) // 2
    reference = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    expected = ((reference - 127) / 128).transpose(2, 0, 1)
    assert np.abs(tensor - expected).mean() < 0.01
    assert float(tensor.min()) >= -127 / 128 and float(tensor.max()) <= 128 / 128

    thin: npt.NDArray[np.uint8] = np.full((1, 12_000, 3), 200, dtype=np.uint8)
    assert preprocess(thin).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(np.zeros((10, 10), dtype=np.uint8))


def test_top_labels_shape_and_validation() -> None:
    row = np.zeros(1000, dtype=np.float32)
    row[[967, 968, 504]] = [0.7, 0.2, 0.1]
    labels = imagenet_labels()
    assert top_labels(row, labels, 2) == [
        {"label": "espresso", "score": 0.7},
        {"label": "cup", "score": 0.2},
    ]
    with pytest.raises(ValueError, match="1000 probabilities"):
        top_labels(row[:10], labels, 2)
    with pytest.raises(ValueError, match="k must be"):
        top_labels(row, labels, 0)


# --- registry and API -------------------------------------------------------------------------


def test_a_selection_of_bundled_models_uses_the_configured_cache(tmp_path: Path) -> None:
    assert LABELS_VERSION == "imagenet-effnet-lite0@1"
    settings = InferenceSettings(intra_op_threads=1, model_cache_dir=tmp_path)
    [model] = load_default_models(settings, only={"dupify-semantic-1"})
    assert isinstance(model, SemanticModel)
    assert Path(model.graph_path).parent == tmp_path / "models"
    assert model.labels_version == LABELS_VERSION
    with pytest.raises(ValueError, match="unknown model ids"):
        load_default_models(settings, only={"dupify-nope-1"})


async def test_the_backend_counts_each_models_images(
    registry: ModelRegistry, backend: LocalBackend, semantic_model: SemanticModel
) -> None:
    assert registry.ids[0] == "dupify-visual-1"  # the default model stays first
    pixels = sample_photo("chelsea")
    before = {name: stats.items for name, stats in backend.stats().items()}
    [visual_rows] = await backend.infer("dupify-visual-1", [pixels])
    rows = await backend.infer("dupify-semantic-1", [pixels, pixels])
    after = {name: stats.items for name, stats in backend.stats().items()}
    assert {name: after[name] - before[name] for name in after} == {
        "dupify-visual-1": 1,
        "dupify-semantic-1": 2,
        "dupify-copy-1": 0,
    }
    assert not isinstance(visual_rows, ApiError) and set(visual_rows) == {"embedding", "nsfw"}
    assert not isinstance(rows[0], ApiError)
    assert set(rows[0]) == {"embedding", PROBABILITIES}
    assert rows[0]["embedding"].shape == (1280,)
    # The registry's model and a separately loaded one agree (the same cached graph bytes).
    direct = semantic_model.predict(semantic_model.preprocess(pixels)[None])["embedding"][0]
    np.testing.assert_allclose(rows[0]["embedding"], direct, atol=1e-5)


async def test_embeddings_endpoint_serves_the_semantic_model(
    api: Api, semantic_model: SemanticModel
) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    jpeg = photo_jpeg("coffee")
    response = await api.client.post(
        "/v1/embeddings",
        files={"file": ("coffee.jpg", jpeg, "image/jpeg")},
        data={"model": "dupify-semantic-1"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "dupify-semantic-1"
    vector = np.asarray(body["data"][0]["embedding"], dtype=np.float32)
    assert vector.shape == (1280,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)

    default = await api.client.post(
        "/v1/embeddings", files={"file": ("coffee.jpg", jpeg, "image/jpeg")}, headers=headers
    )
    assert default.json()["model"] == "dupify-visual-1"
    assert len(default.json()["data"][0]["embedding"]) == 1024

    listing = (await api.client.get("/v1/models", headers=headers)).json()
    cards = {card["id"]: card for card in listing["data"]}
    assert cards["dupify-semantic-1"]["dimensions"] == 1280
    assert cards["dupify-semantic-1"]["object"] == "model"
    assert cards["dupify-semantic-1"]["version"] == "1"
    assert cards["dupify-visual-1"]["dimensions"] == 1024
