"""Text in the API: telling a text from an image in a JSON string, the caps on texts, and text
vectors through the per-account result cache (keyed by the text's HMAC; no text is stored)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fastapi import Request

from dupify.api.inputs import images_of, is_url
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.inference.models.base import FloatArray, ImageModel
from dupify.limits.cache import cached_results
from dupify.server.runtime import Runtime

MAX_TEXT_CHARS = 2048  # characters per text (about 500 tokens: every CLIP-like model truncates
# well before that); a longer one is refused rather than silently cut
MAX_TEXTS = 64  # texts per request (`/v1/embeddings` inputs, `/v1/rank` documents, labels)
# The first bytes of the image formats the decoder accepts (images.decoding's allow-list).
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\r\n]+$")


def looks_like_image(item: str) -> bool:
    """Whether a JSON string item carries an image rather than text: a URL (`http://`,
    `https://`), a `data:` URI, or base64 (nothing but base64 characters and line breaks) whose
    first bytes are a JPEG, PNG, GIF, WebP or BMP signature. Anything else is text."""
    if is_url(item) or item.startswith("data:"):
        return True
    head = item[:64].replace("\r", "").replace("\n", "")[:24]
    if len(head) < 8 or not _BASE64.match(item[:4096]):
        return False
    try:
        start = base64.b64decode(head[: len(head) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        return False
    webp = start[:4] == b"RIFF" and start[8:12] == b"WEBP"
    return webp or any(start.startswith(signature) for signature in SIGNATURES)


@dataclass(frozen=True)
class Items:
    """A request's JSON string items, split: images (resolved to bytes) and texts, each with
    its param and its place in the request."""

    images: list[tuple[int, str, bytes]]
    texts: list[tuple[int, str, str]]

    @property
    def count(self) -> int:
        return len(self.images) + len(self.texts)


def check_text(param: str, text: str) -> None:
    if not text.strip():
        raise ApiError("invalid_request", f"{param} is empty", param=param)
    if len(text) > MAX_TEXT_CHARS:
        raise ApiError(
            "text_too_long",
            f"{param} has {len(text)} characters; a text may have at most {MAX_TEXT_CHARS}",
            param=param,
        )


def check_text_count(count: int, param: str, maximum: int = MAX_TEXTS) -> None:
    if count > maximum:
        raise ApiError(
            "too_many_texts",
            f"{count} texts sent; this request takes at most {maximum}",
            param=param,
        )


@dataclass(frozen=True)
class PendingItems:
    """A request's JSON string items, classified and checked but not yet decoded or fetched:
    the route reserves their quota first, then `resolved` decodes and fetches the images."""

    images: list[tuple[int, str, str]]
    texts: list[tuple[int, str, str]]

    @property
    def count(self) -> int:
        return len(self.images) + len(self.texts)

    async def resolved(self, request: Request) -> Items:
        """The images as bytes, in request order (URLs fetched, base64 decoded)."""
        fetched = await images_of(request, [(param, item) for _, param, item in self.images])
        images = [
            (index, param, data)
            for (index, _, _), (param, data) in zip(self.images, fetched, strict=True)
        ]
        return Items(images, self.texts)


def split_items(
    pairs: Sequence[tuple[str, str]],
    max_images: int,
    max_texts: int = MAX_TEXTS,
    param: str = "input",
) -> PendingItems:
    """Each (param, string) classified (`looks_like_image`) and the texts checked; `param`
    names the list in count errors."""
    image_pairs: list[tuple[int, str, str]] = []
    texts: list[tuple[int, str, str]] = []
    for index, (item_param, item) in enumerate(pairs):
        if item and looks_like_image(item):
            image_pairs.append((index, item_param, item))
        else:
            check_text(item_param, item)
            texts.append((index, item_param, item))
    check_text_count(len(texts), param, max_texts)
    if len(image_pairs) > max_images:
        raise ApiError(
            "too_many_images",
            f"{len(image_pairs)} images sent; this request takes at most {max_images}",
            param=param,
        )
    return PendingItems(image_pairs, texts)


async def text_vectors(
    ctx: RequestContext, runtime: Runtime, model: ImageModel, texts: Sequence[str]
) -> tuple[list[FloatArray], int, int]:
    """Each text's full unit vector, through the result cache: (vectors, cache hits, tokens).

    The cache key is the HMAC of the account, model version and text (limits.cache): the text
    itself is neither stored nor logged. Adds the hits to `ctx.cached_images` (the request
    log's count of cached inputs) instead of replacing what an image step put there.
    """
    if not texts:
        return [], 0, 0
    before = ctx.cached_images
    rows = await runtime.pipeline.tokenize(model.id, texts)
    tokens = sum(model.text_encoder.token_count(row) for row in rows) if model.text_encoder else 0

    async def embed_missing(indices: list[int]) -> list[bytes]:
        vectors = await runtime.pipeline.embed_tokens(model.id, [rows[i] for i in indices])
        return [vector.astype("<f4").tobytes() for vector in vectors]

    results, _ = await cached_results(
        ctx,
        runtime.cache,
        runtime.secret,
        [text.encode("utf-8") for text in texts],
        f"{model.id}@{model.version}",
        {"result": "text_embedding"},
        embed_missing,
    )
    hits = ctx.cached_images
    ctx.cached_images = before + hits
    vectors = [np.frombuffer(result, dtype="<f4").astype(np.float32) for result in results]
    return vectors, hits, tokens


@dataclass(frozen=True)
class LabelSet:
    """What `/v1/analyze` scores `labels` zero-shot against: a model with a text tower, the
    label names, and how many of them the request brought (billed, one unit each)."""

    model: ImageModel
    names: tuple[str, ...]
    billed: int

    def digest(self) -> str:
        """Names the label set in the result cache's parameters (hashed there once more)."""
        return hashlib.sha256(json.dumps(self.names).encode()).hexdigest()


def label_set(
    runtime: Runtime, labels_model: str | None, candidates: Sequence[str] | None, wanted: bool
) -> LabelSet | None:
    """The zero-shot label set a request asks for (None: the labels head answers), checked
    before anything is billed or run."""
    registry = runtime.registry
    model_id = labels_model or (registry.default_labels_model if wanted else None)
    if model_id is None:
        if candidates:
            raise ApiError(
                "invalid_request",
                "candidate_labels: name a labels_model (a model with the text modality) to "
                "score them with",
                param="candidate_labels",
            )
        return None
    model = registry.text_model(model_id, "labels_model")
    if candidates:
        return LabelSet(model, tuple(candidates), len(candidates))
    assert model.zero_shot is not None
    if not model.zero_shot.labels:
        raise ApiError(
            "invalid_request",
            f"candidate_labels: {model.id} has no default label set; send candidate_labels",
            param="candidate_labels",
        )
    return LabelSet(model, model.zero_shot.labels, 0)


async def label_vectors(ctx: RequestContext, runtime: Runtime, labels: LabelSet) -> FloatArray:
    """Each label's unit vector: the operator's set from the pipeline (made once), a request's
    through the result cache like any text."""
    scoring = labels.model.zero_shot
    assert scoring is not None
    if not labels.billed:
        return await runtime.pipeline.default_label_vectors(labels.model.id)
    vectors, _, _ = await text_vectors(ctx, runtime, labels.model, scoring.prompts(labels.names))
    return scoring.label_vectors(np.stack(vectors), len(labels.names))


def text_to_image_model(error: ApiError, fields: dict[str, object], model_id: str) -> ApiError:
    """`error` (an image-only model refusing a JSON string as an image) with a hint when that
    string is text, not a mangled image: same code and param, a clearer message."""
    items = fields.get("input")
    param = error.param or ""
    item: object = items if param == "input" else None
    found = re.fullmatch(r"input\[(\d+)\]", param)
    if found and isinstance(items, list) and int(found.group(1)) < len(items):
        item = items[int(found.group(1))]
    if error.code != "invalid_request" or not isinstance(item, str) or not item.strip():
        return error
    if looks_like_image(item) or _BASE64.match(item[:4096].replace(" ", "")):
        return error
    return ApiError(
        error.code,
        f"{param}: {model_id} embeds images only, and this string is not an image (base64, a "
        "data URI or a URL); to embed text, use a model whose modalities include text "
        "(see /v1/models)",
        param=param,
    )
