"""The operator's models file (DUPIFY_MODELS_FILE): TOML read with tomllib, each `[[models]]`
declaration validated with Pydantic, every error message naming the field at fault."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dupify.inference.assets import AssetError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# The tensor names Optimum's CLIP and SigLIP exports use (`optimum-cli export onnx`).
IMAGE_INPUT = "pixel_values"
IMAGE_OUTPUT = "image_embeds"
TEXT_INPUT = "input_ids"
TEXT_MASK = "attention_mask"
TEXT_OUTPUT = "text_embeds"
FILE_FIELDS = ("model", "image_model", "text_model", "tokenizer")


class ModelsFileError(AssetError):
    """The models file, or a model it declares, is not usable: start-up stops with this message,
    which names the file and the field (`models[0].sha256.image_model: …`)."""


class Preprocess(BaseModel):
    """How an image becomes the model's input tensor (what the model's image processor does)."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(224, gt=0, le=4096, description="the model's input side (after any crop)")
    resize: Literal["shortest", "squash"] = "shortest"  # shortest: shorter side, then centre crop
    resize_side: int | None = Field(None, gt=0, le=4096, description="shorter side before the crop")
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"] = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    scale: float = Field(1 / 255, gt=0, description="pixels (0..255) are multiplied by this first")
    channels: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"

    @model_validator(mode="after")
    def _positive_std(self) -> Preprocess:
        if any(value <= 0 for value in self.std):
            raise ValueError("std: every value must be above 0")
        return self


class Text(BaseModel):
    """How a string becomes token ids for the text tower."""

    model_config = ConfigDict(extra="forbid")

    # Tokens; longer text is cut. Default: the tokenizer.json's own length, else 77 (CLIP's).
    max_length: int = Field(77, gt=1, le=4096)
    padding: Literal["max_length", "longest"] = "max_length"
    pad_token: str | None = None  # default: the tokenizer's own padding token, else id 0


class ZeroShot(BaseModel):
    """Zero-shot labels: the default label set, prompt templates, how cosines become scores."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=list, max_length=1000)
    templates: list[str] = Field(default_factory=lambda: ["a photo of a {label}."], min_length=1)
    scoring: Literal["softmax", "sigmoid"] = "softmax"  # CLIP: softmax; SigLIP: sigmoid
    logit_scale: float = Field(100.0, gt=0)
    logit_bias: float = 0.0

    @model_validator(mode="after")
    def _templates_name_the_label(self) -> ZeroShot:
        for index, template in enumerate(self.templates):
            if "{label}" not in template:
                raise ValueError(f"templates[{index}]: must contain {{label}}")
        if any(not label.strip() for label in self.labels):
            raise ValueError("labels: a label is empty")
        return self


class Sha256(BaseModel):
    """Pinned digests, checked when each file is loaded."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    image_model: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    text_model: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    tokenizer: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


class ModelDeclaration(BaseModel):
    """One `[[models]]` entry. Either `image_model` (+ `text_model`) or one `model` file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    version: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    task: Literal["image", "clip"]
    model: Path | None = None  # one graph with both towers (Optimum's `model.onnx`)
    image_model: Path | None = None
    text_model: Path | None = None
    tokenizer: Path | None = None
    dimensions: int = Field(gt=0, le=65536)
    description: str = ""
    sha256: Sha256 = Sha256()
    preprocess: Preprocess = Preprocess()
    text: Text = Text()
    zero_shot: ZeroShot = ZeroShot()
    image_input: str = IMAGE_INPUT
    image_output: str | None = None  # default IMAGE_OUTPUT; `output` names it for task "image"
    output: str | None = None
    pooling: Literal["cls", "mean"] = "cls"  # for an output of (N, tokens, dimensions)
    text_input: str = TEXT_INPUT
    attention_mask: str | None = TEXT_MASK  # fed only when the graph has it, unless set
    text_output: str = TEXT_OUTPUT

    @model_validator(mode="after")
    def _files_fit_the_task(self) -> ModelDeclaration:
        if self.model is not None and self.image_model is not None:
            raise ValueError("model: give either `model` (one graph) or `image_model`, not both")
        if self.model is None and self.image_model is None:
            raise ValueError("image_model: required (or `model` for one graph with both towers)")
        if self.task == "clip":
            if self.tokenizer is None:
                raise ValueError("tokenizer: required for task 'clip' (a tokenizer.json)")
            if self.model is None and self.text_model is None:
                raise ValueError("text_model: required for task 'clip' (or one `model` file)")
        elif self.text_model is not None or self.tokenizer is not None:
            raise ValueError("text_model: only a 'clip' model has a text tower")
        if self.output is not None and self.image_output is not None:
            raise ValueError("output: give either `output` or `image_output`, not both")
        return self

    @property
    def image_output_name(self) -> str:
        return self.output or self.image_output or IMAGE_OUTPUT

    @property
    def image_file_field(self) -> str:
        return "model" if self.model is not None else "image_model"

    @property
    def text_file_field(self) -> str:
        return "model" if self.model is not None else "text_model"

    def file(self, field: str) -> Path:
        path = getattr(self, field)
        assert isinstance(path, Path)
        return path


class ModelsFile(BaseModel):
    """The whole file: the declarations and, optionally, the default zero-shot labels model."""

    model_config = ConfigDict(extra="forbid")

    default_labels_model: str | None = None
    models: list[ModelDeclaration] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids_are_unique(self) -> ModelsFile:
        seen: set[str] = set()
        for index, model in enumerate(self.models):
            if model.id in seen:
                raise ValueError(f"models[{index}].id: {model.id!r} is declared twice")
            seen.add(model.id)
        if self.default_labels_model is not None:
            clip = {model.id: model for model in self.models if model.task == "clip"}
            chosen = clip.get(self.default_labels_model)
            if chosen is None:
                raise ValueError(
                    f"default_labels_model: {self.default_labels_model!r} is not a declared "
                    f"'clip' model (declared: {', '.join(sorted(clip)) or 'none'})"
                )
            if not chosen.zero_shot.labels:
                raise ValueError(
                    f"default_labels_model: {chosen.id!r} declares no zero_shot.labels to "
                    "score every image's `labels` against"
                )
        return self


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = _location(tuple(error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        # A validator's own message starts with the field it is about: join it to the location.
        field = re.match(r"^([\w\[\].]+): ", message)
        if field:
            where = f"{where}.{field.group(1)}" if where else field.group(1)
            message = message[field.end() :]
        lines.append(f"{where or '(file)'}: {message}")
    return "; ".join(lines)


def parse_models_file(text: str, source: Path) -> ModelsFile:
    """The declarations in `text`, relative paths resolved against `source`'s folder."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{source}: not valid TOML: {exc}") from exc
    try:
        parsed = ModelsFile.model_validate(data)
    except ValidationError as exc:
        raise ModelsFileError(f"{source}: {_message(exc)}") from exc
    for declaration in parsed.models:
        for field in FILE_FIELDS:
            path = getattr(declaration, field)
            if path is not None and not path.is_absolute():
                setattr(declaration, field, (source.parent / path.expanduser()).resolve())
    return parsed


def read_models_file(path: Path | None) -> ModelsFile:
    """The models file at `path` (none configured: no extra models)."""
    if path is None:
        return ModelsFile()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelsFileError(f"DUPIFY_MODELS_FILE: cannot read {path}: {exc.strerror}") from exc
    return parse_models_file(text, path)


def field_name(index: int, declaration: ModelDeclaration, field: str) -> str:
    """How errors name a declaration's field: `models[0].sha256.image_model (siglip2-base)`."""
    return f"models[{index}].{field} ({declaration.id})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_file(index: int, declaration: ModelDeclaration, field: str) -> Path:
    """A declared file, after checking that it exists and (when pinned) its sha256."""
    path = declaration.file(field)
    if not path.is_file():
        raise ModelsFileError(f"{field_name(index, declaration, field)}: file not found: {path}")
    expected = getattr(declaration.sha256, field)
    if expected is not None:
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ModelsFileError(
                f"{field_name(index, declaration, field)}: cannot read {path}: {exc}"
            ) from exc
        if actual != expected.lower():
            raise ModelsFileError(
                f"{field_name(index, declaration, 'sha256.' + field)}: {path} has sha256 "
                f"{actual}, expected {expected.lower()}"
            )
    return path
