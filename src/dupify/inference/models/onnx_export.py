"""Operator models from the models file: an exported ONNX image encoder (DINOv2-class, or a CLIP
or SigLIP vision tower) and, for `clip` models, its text tower, both checked against their
declaration at load so a mismatch stops start-up with the field at fault."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
from PIL import Image

from dupify.analysis.vectors import unit_rows
from dupify.inference.catalog import (
    ModelDeclaration,
    ModelsFile,
    ModelsFileError,
    checked_file,
    field_name,
)
from dupify.inference.models.base import (
    EMBEDDING,
    IMAGE,
    TEXT,
    Array,
    FloatArray,
    ImageModel,
    checked_batch,
)
from dupify.inference.models.tokens import TextTower
from dupify.inference.session import OrtSession, SessionPolicy
from dupify.inference.zero_shot import ZeroShotScoring

RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def pooled(output: Array, pooling: str) -> Array:
    """(N, D) as is; (N, tokens, D) pooled to (N, D): the first (CLS) token, or the mean."""
    if output.ndim == 3:
        return output[:, 0, :] if pooling == "cls" else output.mean(axis=1)
    return output


class ExportedModel(ImageModel):
    """One declared model. Its class attributes (id, dimensions, …) come from the declaration:
    `load_declared` makes a subclass per declaration, so each model keeps the base class's
    per-class facts."""

    declaration: ClassVar[ModelDeclaration]
    index: ClassVar[int]

    def __init__(self, policy: SessionPolicy) -> None:
        self.feeds_extra: dict[str, Array] = {}
        super().__init__(policy)  # opens the image graph and runs `_check_outputs`
        declaration = self.declaration
        if declaration.task == "clip":
            text_session = self.session
            if declaration.model is None:
                text_path = checked_file(self.index, declaration, "text_model")
                text_session = policy.session(text_path)
            tokenizer = checked_file(self.index, declaration, "tokenizer")
            self.text_encoder = TextTower(
                self.index, declaration, text_session, tokenizer, self._image_dummy()
            )
            spec = declaration.zero_shot
            self.zero_shot = ZeroShotScoring(
                labels=tuple(spec.labels),
                templates=tuple(spec.templates),
                scoring=spec.scoring,
                logit_scale=spec.logit_scale,
                logit_bias=spec.logit_bias,
            )

    def _field(self, field: str) -> str:
        return field_name(self.index, self.declaration, field)

    def load(self) -> Path:
        return checked_file(self.index, self.declaration, self.declaration.image_file_field)

    def preprocess(self, pixels: npt.NDArray[np.uint8]) -> FloatArray:
        spec = self.declaration.preprocess
        image = Image.fromarray(pixels)
        resample = RESAMPLING[spec.interpolation]
        size = spec.size
        if spec.resize == "squash":
            image = image.resize((size, size), resample)
        else:
            side = spec.resize_side or size
            width, height = image.size
            scale = side / min(width, height)
            new = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(new, resample)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
        array: FloatArray = np.asarray(image, dtype=np.float32) * np.float32(spec.scale)
        if spec.channels == "bgr":
            array = array[..., ::-1]
        mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
        array = np.divide(np.subtract(array, mean), std, dtype=np.float32)
        if spec.layout == "nchw":
            array = array.transpose(2, 0, 1)
        return np.ascontiguousarray(array, dtype=np.float32)

    def predict(self, batch: FloatArray) -> Mapping[str, Array]:
        batch = checked_batch(batch, self.input_shape)
        feeds = {self.declaration.image_input: batch, **self.feeds_extra}
        (output,) = self.session.run([self.declaration.image_output_name], feeds)
        vectors = pooled(np.asarray(output, dtype=np.float32), self.declaration.pooling)
        return {EMBEDDING: unit_rows(vectors)}

    def _image_dummy(self) -> dict[str, Array]:
        """What a one-graph model's image input gets while only its text tower is wanted."""
        if self.declaration.model is None:
            return {}
        return {self.declaration.image_input: np.zeros((1, *self.input_shape), np.float32)}

    def _check_outputs(self) -> None:
        """The image graph against the declaration: input and output names, then one probe
        image whose vector must have the declared dimensions."""
        declaration = self.declaration
        session = self.session
        if declaration.image_input not in session.input_names:
            raise ModelsFileError(
                f"{self._field('image_input')}: the {declaration.image_file_field} graph has no "
                f"input {declaration.image_input!r}; its inputs: {', '.join(session.input_names)}"
            )
        output_field = "output" if declaration.output is not None else "image_output"
        if declaration.image_output_name not in session.output_names:
            raise ModelsFileError(
                f"{self._field(output_field)}: the {declaration.image_file_field} graph has no "
                f"output {declaration.image_output_name!r}; its outputs: "
                f"{', '.join(session.output_names)}"
            )
        if declaration.model is not None:
            self.feeds_extra = text_dummy(self.index, declaration, session)
        others = set(session.input_names) - {declaration.image_input, *self.feeds_extra}
        if others:
            raise ModelsFileError(
                f"{self._field('image_input')}: the {declaration.image_file_field} graph also "
                f"needs inputs {', '.join(sorted(others))}, which Dupify cannot feed"
            )
        try:
            vectors = self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))[EMBEDDING]
        except Exception as exc:
            raise ModelsFileError(
                f"{self._field(declaration.image_file_field)}: the graph does not run on a "
                f"{self.input_shape} input (check models.preprocess: size, layout): {exc}"
            ) from exc
        if vectors.shape != (1, declaration.dimensions):
            raise ModelsFileError(
                f"{self._field('dimensions')}: declared {declaration.dimensions}, but the "
                f"{declaration.image_file_field} graph's {declaration.image_output_name!r} gives "
                f"vectors of {vectors.shape[-1]}"
            )


def text_dummy(index: int, declaration: ModelDeclaration, session: OrtSession) -> dict[str, Array]:
    """What a one-graph model's text inputs get while only its image tower is wanted: one
    two-token text (the graph computes its logits against it; the tower's rows are dropped)."""
    feeds: dict[str, Array] = {}
    if declaration.text_input in session.input_names:
        feeds[declaration.text_input] = np.zeros((1, 2), dtype=np.int64)
    if declaration.attention_mask and declaration.attention_mask in session.input_names:
        feeds[declaration.attention_mask] = np.ones((1, 2), dtype=np.int64)
    if not feeds and declaration.task == "clip":
        raise ModelsFileError(
            f"{field_name(index, declaration, 'text_input')}: the model graph has no input "
            f"{declaration.text_input!r}; its inputs: {', '.join(session.input_names)}"
        )
    return feeds


def model_class(index: int, declaration: ModelDeclaration) -> type[ExportedModel]:
    """A subclass of `ExportedModel` whose class attributes are the declaration's."""
    spec = declaration.preprocess
    side = spec.size
    shape = (3, side, side) if spec.layout == "nchw" else (side, side, 3)
    path = declaration.model or declaration.image_model
    created = int(path.stat().st_mtime) if path is not None and path.is_file() else 0
    attributes: dict[str, Any] = {
        "id": declaration.id,
        "version": declaration.version,
        "dimensions": declaration.dimensions,
        "task": "clip" if declaration.task == "clip" else "embedding",
        "created": created,
        "input_shape": shape,
        "working_side": max(side, spec.resize_side or side),
        "modalities": (IMAGE, TEXT) if declaration.task == "clip" else (IMAGE,),
        "declaration": declaration,
        "index": index,
        "__doc__": f"The operator's model {declaration.id!r} (models file entry {index}).",
    }
    name = "Exported_" + "".join(ch if ch.isalnum() else "_" for ch in declaration.id)
    return cast(type[ExportedModel], type(name, (ExportedModel,), attributes))


def load_declared(index: int, declaration: ModelDeclaration, policy: SessionPolicy) -> ImageModel:
    """One declared model, loaded and checked (raises `ModelsFileError` naming the field)."""
    try:
        return model_class(index, declaration)(policy)
    except ModelsFileError:
        raise
    except Exception as exc:  # ONNX Runtime refusing the file, the CUDA provider missing, …
        field = declaration.image_file_field
        raise ModelsFileError(f"{field_name(index, declaration, field)}: {exc}") from exc


def load_declared_models(catalog: ModelsFile, policy: SessionPolicy) -> list[ImageModel]:
    """Every declared model, in file order; the first that fails stops start-up."""
    return [load_declared(i, declaration, policy) for i, declaration in enumerate(catalog.models)]


def texts_of(model: ImageModel, texts: Sequence[str]) -> list[Array]:
    """`texts` tokenised for `model`'s text tower (pure: any thread)."""
    if model.text_encoder is None:
        raise ValueError(f"{model.id} has no text tower")
    return model.text_encoder.tokenize(texts)
