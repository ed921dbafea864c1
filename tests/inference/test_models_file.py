"""The operator's models file: the real loader on small exports built here. Good declarations
load (Optimum's two-file and one-file CLIP layouts, an OpenCLIP-style pair, a DINO-shaped
image model); each bad one fails at load with a message naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dupify.config import InferenceSettings
from dupify.inference.catalog import ModelsFileError, parse_models_file, read_models_file
from dupify.inference.models.base import EMBEDDING
from dupify.inference.registry import ModelRegistry
from support.onnx_builders import (
    COLOURS,
    DIMENSIONS,
    SIDE,
    solid_embedding,
    text_model,
    tokenizer_json,
    vision_model,
    write_exports,
)

SETTINGS = InferenceSettings(intra_op_threads=1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_exports(tmp_path_factory.mktemp("exports")).folder


def clip_toml(folder: Path, **changes: str) -> str:
    """One `tiny-clip` declaration with some fields changed or added; a key in brackets is a
    table (`"[models.text]": "max_length = 8"`)."""
    fields = {
        "id": '"tiny-clip"',
        "version": '"1"',
        "task": '"clip"',
        "image_model": f'"{folder}/vision_model.onnx"',
        "text_model": f'"{folder}/text_model.onnx"',
        "tokenizer": f'"{folder}/tokenizer.json"',
        "dimensions": str(DIMENSIONS),
        "[models.preprocess]": f"size = {SIDE}\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]",
        **changes,
    }
    lines = [f"{key} = {value}" for key, value in fields.items() if not key.startswith("[")]
    tables = [f"{key}\n{value}" for key, value in fields.items() if key.startswith("[")]
    return "\n".join(["[[models]]", *lines, *tables]) + "\n"


def load(folder: Path, text: str) -> ModelRegistry:
    path = folder / f"models-{abs(hash(text))}.toml"
    path.write_text(text, encoding="utf-8")
    return ModelRegistry(SETTINGS, models=[], models_file=path)


def test_the_exports_load_and_embed_into_one_space(exports: Path) -> None:
    registry = ModelRegistry(SETTINGS, models=[], models_file=exports / "models.toml")
    assert registry.ids == ["tiny-clip", "tiny-clip-one", "tiny-dino"]
    assert registry.default_labels_model == "tiny-clip"
    red = np.zeros((24, 30, 3), np.uint8)
    red[..., 0] = 255
    expected = solid_embedding(COLOURS["red"])
    expected /= np.linalg.norm(expected)
    for model_id in ("tiny-clip", "tiny-clip-one"):
        model = registry.get(model_id)
        assert model.modalities == ("image", "text") and model.task == "clip"
        image = model.predict(model.preprocess(red)[None])[EMBEDDING][0]
        assert model.text_encoder is not None
        rows = np.stack(model.text_encoder.tokenize(["red", "a photo of a red.", "blue dog"]))
        texts = model.text_encoder.predict(rows)[EMBEDDING]
        np.testing.assert_allclose(image, expected, atol=1e-5)
        np.testing.assert_allclose(texts[:2], [expected, expected], atol=1e-5)
        assert np.linalg.norm(texts, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
        assert texts[2] @ image < 0.9
    dino = registry.get("tiny-dino")
    assert (dino.modalities, dino.dimensions, dino.working_side) == (("image",), 6, SIDE + 4)
    vector = dino.predict(dino.preprocess(red)[None])[EMBEDDING]
    assert vector.shape == (1, 6) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert dino.text_encoder is None


def test_an_openclip_style_pair_with_its_own_tensor_names(tmp_path: Path, exports: Path) -> None:
    (tmp_path / "image_encoder.onnx").write_bytes(vision_model(pixels="image", output="features"))
    (tmp_path / "text_encoder.onnx").write_bytes(text_model(mask=False, output="text_features"))
    text = clip_toml(
        exports,
        image_model=f'"{tmp_path}/image_encoder.onnx"',
        text_model=f'"{tmp_path}/text_encoder.onnx"',
        image_input='"image"',
        image_output='"features"',
        text_output='"text_features"',
    )
    model = load(tmp_path, text).get("tiny-clip")
    assert model.text_encoder is not None
    [vector] = model.text_encoder.predict(np.stack(model.text_encoder.tokenize(["green"])))[
        EMBEDDING
    ]
    expected = solid_embedding(COLOURS["green"])
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)


def bad_cases(folder: Path, tmp: Path) -> list[tuple[str, str, str]]:
    """(what is wrong, the models file, a pattern the error must match)."""
    (tmp / "garbage.json").write_text("{not a tokenizer", encoding="utf-8")
    (tmp / "wrong.json").write_text(json.dumps({"version": "1.0"}), encoding="utf-8")
    return [
        (
            "missing file",
            clip_toml(folder, image_model=f'"{tmp}/nowhere.onnx"'),
            r"models\[0\]\.image_model \(tiny-clip\): file not found: .*nowhere\.onnx",
        ),
        (
            "wrong sha256",
            clip_toml(folder, **{"[models.sha256]": f'image_model = "{"0" * 64}"'}),
            r"models\[0\]\.sha256\.image_model \(tiny-clip\): .* has sha256 [0-9a-f]{64}, "
            r"expected 0{64}",
        ),
        (
            "wrong input name",
            clip_toml(folder, image_input='"pixels"'),
            r"models\[0\]\.image_input \(tiny-clip\): .*no input 'pixels'; its inputs: "
            r"pixel_values",
        ),
        (
            "wrong output name",
            clip_toml(folder, image_output='"pooler_output"'),
            r"models\[0\]\.image_output \(tiny-clip\): .*no output 'pooler_output'",
        ),
        (
            "wrong text input name",
            clip_toml(folder, text_input='"tokens"'),
            r"models\[0\]\.text_input \(tiny-clip\): .*no input 'tokens'",
        ),
        (
            "wrong dimension",
            clip_toml(folder, dimensions="16"),
            r"models\[0\]\.dimensions \(tiny-clip\): declared 16, but .* gives vectors of 8",
        ),
        (
            "a tokenizer that does not load",
            clip_toml(folder, tokenizer=f'"{tmp}/garbage.json"'),
            r"models\[0\]\.tokenizer \(tiny-clip\): .*garbage\.json is not a loadable",
        ),
        (
            "a tokenizer.json of the wrong shape",
            clip_toml(folder, tokenizer=f'"{tmp}/wrong.json"'),
            r"models\[0\]\.tokenizer \(tiny-clip\): .*wrong\.json is not a loadable",
        ),
        (
            "an unknown pad token",
            clip_toml(folder, **{"[models.text]": 'pad_token = "<nope>"'}),
            r"models\[0\]\.text\.pad_token \(tiny-clip\): '<nope>' is not in the",
        ),
    ]


def test_each_bad_declaration_fails_at_load_naming_the_field(exports: Path, tmp_path: Path) -> None:
    for what, text, pattern in bad_cases(exports, tmp_path):
        with pytest.raises(ModelsFileError) as caught:
            load(tmp_path, text)
        assert re.search(pattern, str(caught.value)), (what, str(caught.value))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": '"video"'}, r"models\[0\]\.task: Input should be 'image' or 'clip'"),
        ({"dimensions": "0"}, r"models\[0\]\.dimensions: Input should be greater than 0"),
        ({"id": '"has space"'}, r"models\[0\]\.id: String should match pattern"),
        ({"colour": '"red"'}, r"models\[0\]\.colour: Extra inputs are not permitted"),
        ({"id": "tiny-clip"}, r"models\.toml: not valid TOML"),
        ({"version": "1"}, r"models\[0\]\.version: Input should be a valid string"),
        ({"[models.preprocess]": "size = 0"}, r"models\[0\]\.preprocess"),
        ({"[models.zero_shot]": 'templates = ["a photo"]'}, r"models\[0\]\.zero_shot\.templates"),
        ({"[models.sha256]": 'image_model = "abc"'}, r"models\[0\]\.sha256\.image_model: String"),
    ],
)
def test_an_invalid_file_names_the_field(
    exports: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    text = clip_toml(exports, **change)
    with pytest.raises(ModelsFileError) as caught:
        parse_models_file(text, tmp_path / "models.toml")
    assert re.search(message, str(caught.value)), str(caught.value)


def test_file_level_mistakes(exports: Path, tmp_path: Path) -> None:
    task = clip_toml(exports).replace('task = "clip"', 'task = "image"')
    cases = {
        task: r"models\[0\]\.text_model: only a 'clip' model has a text tower",
        clip_toml(exports) + clip_toml(exports): r"models\[1\]\.id: 'tiny-clip' is declared twice",
        'default_labels_model = "x"\n' + clip_toml(exports): r"default_labels_model: 'x' is not",
        'default_labels_model = "tiny-clip"\n' + clip_toml(exports): (
            r"default_labels_model: 'tiny-clip' declares no zero_shot.labels"
        ),
        clip_toml(exports).replace(f'tokenizer = "{exports}/tokenizer.json"\n', ""): (
            r"models\[0\]\.tokenizer: required for task 'clip'"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(ModelsFileError) as caught:
            parse_models_file(text, tmp_path / "models.toml")
        assert re.search(message, str(caught.value)), str(caught.value)
    with pytest.raises(ModelsFileError, match="DUPIFY_MODELS_FILE: cannot read"):
        read_models_file(tmp_path / "absent.toml")
    bundled = clip_toml(exports, id='"dupify-visual-1"')
    with pytest.raises(ModelsFileError, match=r"models\[0\]\.id: 'dupify-visual-1' is already"):
        load(tmp_path, bundled)


def test_relative_paths_are_read_from_the_files_folder(exports: Path) -> None:
    parsed = read_models_file(exports / "models.toml")
    one = parsed.models[1]
    assert one.model == exports / "one" / "model.onnx" and one.image_model is None


def test_int32_token_ids_and_the_other_pixel_layouts(tmp_path: Path, exports: Path) -> None:
    (tmp_path / "text32.onnx").write_bytes(text_model(int32=True))
    model = load(tmp_path, clip_toml(exports, text_model=f'"{tmp_path}/text32.onnx"')).get(
        "tiny-clip"
    )
    assert model.text_encoder is not None
    [vector] = model.text_encoder.predict(np.stack(model.text_encoder.tokenize(["blue"])))[
        EMBEDDING
    ]
    expected = solid_embedding(COLOURS["blue"])
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)

    # Preprocessing as declared: squash, BGR, NHWC, a scale of 1 and per-channel mean/std.
    table = (
        "size = 4\nresize = 'squash'\ninterpolation = 'nearest'\nchannels = 'bgr'\n"
        "layout = 'nhwc'\nscale = 1.0\nmean = [10.0, 20.0, 30.0]\nstd = [2.0, 4.0, 5.0]"
    )
    declared = clip_toml(exports, **{"[models.preprocess]": table}, image_input='"pixel_values"')
    path = tmp_path / "layout.toml"
    path.write_text(declared)
    parsed = read_models_file(path).models[0]
    from dupify.inference.models.onnx_export import model_class

    cls = model_class(0, parsed)
    assert cls.input_shape == (4, 4, 3) and cls.working_side == 4
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 50, 100, 150
    tensor = cls.preprocess(cls.__new__(cls), pixels)
    # BGR: the blue channel first, each minus its mean, over its std.
    np.testing.assert_allclose(tensor[0, 0], [(150 - 10) / 2, (100 - 20) / 4, (50 - 30) / 5])
    assert tensor.shape == (4, 4, 3) and tensor.dtype == np.float32


def test_shortest_side_then_centre_crop(exports: Path) -> None:
    registry = ModelRegistry(SETTINGS, models=[], models_file=exports / "models.toml")
    dino = registry.get("tiny-dino")  # size 16 after a shorter side of 20
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # left half white: the crop keeps the middle, half white
    tensor = dino.preprocess(pixels)
    assert tensor.shape == (3, SIDE, SIDE)
    row = tensor[0, SIDE // 2]
    assert row[0] > 1 and row[-1] < -1  # white on the left, black on the right


def test_declared_models_get_their_sessions_from_the_session_policy(exports: Path) -> None:
    """DUPIFY_INFERENCE__DEVICE reaches the operator's models as it reaches the bundled ones:
    "cuda" on this CPU-only build is refused by the policy at load, "auto" falls back to CPU."""
    with pytest.raises(ModelsFileError, match="no CUDAExecutionProvider"):
        ModelRegistry(
            InferenceSettings(device="cuda", intra_op_threads=1),
            models=[],
            models_file=exports / "models.toml",
        )
    registry = ModelRegistry(
        InferenceSettings(device="auto", intra_op_threads=1),
        models=[],
        models_file=exports / "models.toml",
    )
    for model in registry.models:
        assert model.providers == ["CPUExecutionProvider"]
        assert model.session.intra_op_threads == 1
    encoder = registry.get("tiny-clip").text_encoder
    assert encoder is not None and encoder.session.intra_op_threads == 1


def test_the_token_window_is_declared_or_the_tokenizers_own(tmp_path: Path, exports: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(tokenizer_json(truncate=6))
    own = clip_toml(exports, tokenizer=f'"{tmp_path}/tokenizer.json"')
    declared = clip_toml(
        exports, tokenizer=f'"{tmp_path}/tokenizer.json"', **{"[models.text]": "max_length = 9"}
    )
    for text, length in ((own, 6), (declared, 9), (clip_toml(exports), 77)):
        encoder = load(tmp_path, text).get("tiny-clip").text_encoder
        assert encoder is not None and encoder.input_shape == (2, length)
        [row] = encoder.tokenize(["a photo of a red cat on a green boat"])
        assert row.shape == (2, length) and row.dtype == np.int64
        assert encoder.token_count(row) == min(10, length)
