"""A declared model's text tower: a Hugging Face `tokenizer.json` (the `tokenizers` package) turns
strings into fixed-length token rows, and the text graph turns batches of rows into unit
vectors in the image tower's space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from dupify.analysis.vectors import unit_rows
from dupify.inference.catalog import ModelDeclaration, ModelsFileError, field_name
from dupify.inference.models.base import EMBEDDING, Array
from dupify.inference.session import OrtSession

PROBE_TEXT = "a photo of a cat"


def load_tokenizer(index: int, declaration: ModelDeclaration, path: Path) -> tuple[Tokenizer, int]:
    """The tokenizer, truncating and padding to one length, and that length: the declared
    `text.max_length`, else the one the tokenizer.json itself sets, else 77 (CLIP's)."""
    where = field_name(index, declaration, "tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own Exception subclass
        raise ModelsFileError(f"{where}: {path} is not a loadable tokenizer.json: {exc}") from exc
    spec = declaration.text
    pad_id = 0
    if spec.pad_token is not None:
        found = tokenizer.token_to_id(spec.pad_token)
        if found is None:
            raise ModelsFileError(
                f"{field_name(index, declaration, 'text.pad_token')}: {spec.pad_token!r} is not "
                f"in the tokenizer's vocabulary"
            )
        pad_id = found
    elif tokenizer.padding is not None:
        pad_id = int(tokenizer.padding.get("pad_id", 0))
    max_length = spec.max_length
    if "max_length" not in spec.model_fields_set:
        own = (tokenizer.truncation or {}).get("max_length") or (tokenizer.padding or {}).get(
            "length"
        )
        max_length = int(own) if own else max_length
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id)
    return tokenizer, max_length


class TextTower:
    """Tokenise (`tokenize`, pure) and embed (`predict`, a stacked batch) text.

    A tokenised text is one (2, max_length) int64 row, ids over attention mask, always padded
    to `max_length`, so the micro-batcher stacks rows of any requests; with `padding =
    "longest"` `predict` cuts the batch to its longest text before running the graph.
    """

    def __init__(
        self,
        index: int,
        declaration: ModelDeclaration,
        session: OrtSession,
        tokenizer_path: Path,
        image_dummy: Mapping[str, Array],
    ) -> None:
        self.index = index
        self.declaration = declaration
        self.session = session
        self.tokenizer, self.max_length = load_tokenizer(index, declaration, tokenizer_path)
        self.input_shape: tuple[int, ...] = (2, self.max_length)
        self.extra: dict[str, Array] = dict(image_dummy)
        self.id_type: type[np.integer] = np.int64
        self._check()

    def _field(self, field: str) -> str:
        return field_name(self.index, self.declaration, field)

    def tokenize(self, texts: Sequence[str]) -> list[Array]:
        rows = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            rows.append(np.array([encoding.ids, encoding.attention_mask], dtype=np.int64))
        return rows

    def token_count(self, row: Array) -> int:
        return int(np.asarray(row)[1].sum())

    def predict(self, batch: Array) -> Mapping[str, Array]:
        batch = np.asarray(batch)
        if batch.ndim != 3 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"expected a (N, 2, {self.max_length}) batch, got {batch.shape}")
        ids, mask = batch[:, 0, :], batch[:, 1, :]
        if self.declaration.text.padding == "longest":
            longest = max(1, int(mask.sum(axis=1).max()))
            ids, mask = ids[:, :longest], mask[:, :longest]
        feeds: dict[str, Array] = {
            self.declaration.text_input: np.ascontiguousarray(ids, dtype=self.id_type),
            **self.extra,
        }
        if self.uses_mask:
            feeds[str(self.declaration.attention_mask)] = np.ascontiguousarray(
                mask, dtype=self.id_type
            )
        (output,) = self.session.run([self.declaration.text_output], feeds)
        vectors = np.asarray(output, dtype=np.float32)
        if vectors.ndim == 3:  # (N, tokens, D): the first token, as the image side's "cls"
            vectors = vectors[:, 0, :]
        return {EMBEDDING: unit_rows(vectors)}

    def _check(self) -> None:
        """The text graph against the declaration: names, then one probe caption whose vector
        must have the declared dimensions."""
        declaration, session = self.declaration, self.session
        graph = "model" if declaration.model is not None else "text_model"
        if declaration.text_input not in session.input_names:
            raise ModelsFileError(
                f"{self._field('text_input')}: the {graph} graph has no input "
                f"{declaration.text_input!r}; its inputs: {', '.join(session.input_names)}"
            )
        mask = declaration.attention_mask
        mask_declared = "attention_mask" in declaration.model_fields_set
        if mask and mask not in session.input_names and mask_declared:
            raise ModelsFileError(
                f"{self._field('attention_mask')}: the {graph} graph has no input {mask!r}; "
                f"its inputs: {', '.join(session.input_names)}"
            )
        self.uses_mask = bool(mask) and mask in session.input_names
        if declaration.text_output not in session.output_names:
            raise ModelsFileError(
                f"{self._field('text_output')}: the {graph} graph has no output "
                f"{declaration.text_output!r}; its outputs: {', '.join(session.output_names)}"
            )
        known = {declaration.text_input, *self.extra, *([mask] if self.uses_mask else [])}
        others = set(session.input_names) - known
        if others:
            raise ModelsFileError(
                f"{self._field('text_input')}: the {graph} graph also needs inputs "
                f"{', '.join(sorted(others))}, which Dupify cannot feed"
            )
        probe = np.stack(self.tokenize([PROBE_TEXT]))
        try:
            vectors = self.predict(probe)[EMBEDDING]
        except Exception as first:
            # Some exports take int32 ids; ONNX Runtime names the type it wanted.
            self.id_type = np.int32
            try:
                vectors = self.predict(probe)[EMBEDDING]
            except Exception:
                raise ModelsFileError(
                    f"{self._field(graph)}: the text graph does not run on tokenised text "
                    f"(check text_input, attention_mask, text.max_length): {first}"
                ) from first
        if vectors.shape != (1, declaration.dimensions):
            raise ModelsFileError(
                f"{self._field('dimensions')}: declared {declaration.dimensions}, but the "
                f"{graph} graph's {declaration.text_output!r} gives vectors of "
                f"{vectors.shape[-1]}"
            )
