"""The public HTTP API, one function per endpoint, readable top-down."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from sqlalchemy import text

from dupify.api.deps import authenticate_request, get_runtime, require_scope
from dupify.api.inputs import (
    encode_vector,
    image_items,
    images_of,
    read_image_request,
    request_options,
)
from dupify.api.schemas import (
    AUTH_ERRORS,
    ENCODING_FORMAT_FIELD,
    IMAGE_ERRORS,
    MODEL_FIELD,
    EmbeddingOptions,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelList,
    error_responses,
    form_field,
    image_files,
    image_request_body,
)
from dupify.api.texts import Items, split_items, text_to_image_model, text_vectors
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.inference.models.base import ImageModel
from dupify.inference.registry import EMBEDDING_ROLE
from dupify.limits.cache import cached_results, x_cache
from dupify.pipeline.post import with_dimensions
from dupify.server.json import VectorJSONResponse
from dupify.server.runtime import Runtime

router = APIRouter()


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    responses=error_responses(
        *AUTH_ERRORS,
        *IMAGE_ERRORS,
        "model_not_found",
        "quota_exceeded",
        "text_too_long",
        "too_many_texts",
    ),
    openapi_extra=image_request_body(
        EmbeddingsRequest,
        {
            "file": image_files(1),
            "model": MODEL_FIELD,
            "encoding_format": ENCODING_FORMAT_FIELD,
            "dimensions": form_field(
                "Truncate to this many dimensions and re-normalise.", type="integer", minimum=1
            ),
        },
    ),
    summary="Embed images",
    tags=["images"],
)
async def create_embeddings(
    request: Request, ctx: RequestContext = Depends(require_scope("embeddings"))
) -> VectorJSONResponse:
    runtime, body = await read_image_request(request)
    limits = runtime.settings.limits
    options: EmbeddingOptions = request_options(
        body, dict(request.query_params), EmbeddingsRequest, EmbeddingOptions
    )
    model = runtime.registry.get(options.model or runtime.registry.roles[EMBEDDING_ROLE])
    ctx.model = model.id
    if body.form == "json" and model.text_encoder is not None:
        return await _embed_images_and_texts(request, ctx, runtime, body.json, model, options)
    items = image_items(body, limits.max_images_embeddings)
    _check_dimensions(model, options.dimensions)
    await runtime.meter.charge(ctx, len(items))
    try:
        images = await images_of(request, items)
    except ApiError as error:
        raise text_to_image_model(error, body.json, model.id) from error
    full, cache_state = await image_vectors(ctx, runtime, model, images)
    usage = {"images": len(images), "cached_images": ctx.cached_images}
    return _answer(model.id, full, options, usage, cache_state)


def _answer(
    model_id: str,
    full: Sequence[np.ndarray],
    options: EmbeddingOptions,
    usage: dict[str, int],
    cache_state: str,
) -> VectorJSONResponse:
    """The OpenAI-shaped list, `EmbeddingsResponse`'s fields built directly rather than through
    the model: the vectors stay float32 arrays that orjson writes from their buffers (a Pydantic
    round of 1024 Python floats per image cost more than the rest of a cache hit)."""
    content = {
        "object": "list",
        "model": model_id,
        "data": _data(full, options),
        "usage": {"prompt_tokens": 0, "total_tokens": 0, **usage},
    }
    return VectorJSONResponse(content, headers={"X-Cache": cache_state})


def _check_dimensions(model: ImageModel, dimensions: int | None) -> None:
    if dimensions is not None and dimensions > model.dimensions:
        raise ApiError(
            "invalid_request",
            f"dimensions: {model.id} has {model.dimensions} dimensions; ask for at most that",
            param="dimensions",
        )


def _data(full: Sequence[np.ndarray], options: EmbeddingOptions) -> list[dict[str, Any]]:
    vectors = with_dimensions(np.stack(full), options.dimensions)
    return [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode_vector(vector, options.encoding_format),
        }
        for index, vector in enumerate(vectors)
    ]


async def image_vectors(
    ctx: RequestContext, runtime: Runtime, model: ImageModel, images: Sequence[tuple[str, bytes]]
) -> tuple[list[np.ndarray], str]:
    """Each image's full unit vector from `model`, through the result cache, and X-Cache; sets
    `ctx.cached_images`. The first bad image fails the request."""
    if not images:
        return [], "miss"

    async def embed_missing(indices: list[int]) -> list[bytes]:
        # Only cache misses reach the decoder and the model; the full vector is cached (as
        # little-endian float32) so any `dimensions` can be served from it.
        chosen = [images[index] for index in indices]
        vectors = await runtime.pipeline.embed_all(
            [data for _, data in chosen],
            [param for param, _ in chosen],
            model.id,
            account=ctx.caller,
        )
        return [vector.astype("<f4").tobytes() for vector in vectors]

    results, cache_state = await cached_results(
        ctx,
        runtime.cache,
        runtime.secret,
        [data for _, data in images],
        f"{model.id}@{model.version}",
        {"result": "embedding"},
        embed_missing,
    )
    return [np.frombuffer(result, dtype="<f4") for result in results], cache_state


async def _embed_images_and_texts(
    request: Request,
    ctx: RequestContext,
    runtime: Runtime,
    fields: dict[str, Any],
    model: ImageModel,
    options: EmbeddingOptions,
) -> VectorJSONResponse:
    """A model with a text tower: each JSON string is an image or a text (api.texts), all
    embedded into the one space, in request order; one input (either kind) is one unit."""
    limits = runtime.settings.limits
    items = fields.get("input")
    pairs = [("input", items)] if isinstance(items, str) else None
    if isinstance(items, list) and all(isinstance(item, str) for item in items):
        pairs = [(f"input[{index}]", item) for index, item in enumerate(items)]
    if pairs is None:
        raise ApiError(
            "invalid_request",
            "input: expected a text or an image (base64, a data URI or a URL), or a list of them",
            param="input",
        )
    if not pairs:
        raise ApiError("invalid_request", "input: at least one input is required", param="input")
    pending = split_items(pairs, limits.max_images_embeddings)
    _check_dimensions(model, options.dimensions)
    await runtime.meter.charge(ctx, pending.count)
    split = await pending.resolved(request)
    ordered, hits, tokens = await item_vectors(ctx, runtime, model, split)
    usage = {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "images": len(split.images),
        "texts": len(split.texts),
        "cached_images": ctx.cached_images,
    }
    return _answer(model.id, ordered, options, usage, x_cache(hits, split.count))


async def item_vectors(
    ctx: RequestContext, runtime: Runtime, model: ImageModel, split: Items
) -> tuple[list[np.ndarray], int, int]:
    """Each item's full unit vector in request order, images and texts through the result
    cache: (vectors, cache hits, the texts' tokens). `ctx.cached_images` counts every hit."""
    images, _ = await image_vectors(
        ctx, runtime, model, [(param, data) for _, param, data in split.images]
    )
    ctx.cached_images = ctx.cached_images if split.images else 0
    texts, _, tokens = await text_vectors(ctx, runtime, model, [text for _, _, text in split.texts])
    ordered: list[np.ndarray] = [np.empty(0)] * split.count
    for (index, _, _), vector in zip(split.images, images, strict=True):
        ordered[index] = vector
    for (index, _, _), vector in zip(split.texts, texts, strict=True):
        ordered[index] = vector
    return ordered, ctx.cached_images, tokens


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=error_responses(
        "missing_api_key", "invalid_api_key", "account_suspended", "rate_limited"
    ),
    summary="List the models",
    tags=["models"],
)
async def list_models(
    request: Request, ctx: RequestContext = Depends(authenticate_request)
) -> ModelList:
    registry = get_runtime(request).registry
    return ModelList.model_validate(
        {
            "data": [
                {**entry, "modalities": list(registry.get(entry["id"]).modalities)}
                for entry in registry.describe()
            ]
        }
    )


@router.get("/healthz", summary="Process liveness", tags=["operations"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database and one real inference answer",
    responses=error_responses("not_ready"),
    tags=["operations"],
)
async def readyz(request: Request) -> dict[str, Any]:
    runtime = get_runtime(request)
    checks: dict[str, str] = {}

    def ping_database() -> None:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    for name, check in (
        ("database", asyncio.to_thread(ping_database)),
        ("inference", runtime.pipeline.warm_up()),
    ):
        try:
            await asyncio.wait_for(check, timeout=10)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason goes to the operator
            checks[name] = f"failed: {type(exc).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        raise ApiError("not_ready", f"not ready: {', '.join(failing)} failing")
    # Reported, never failing: without Redis the process still serves (per-process limits, no
    # cache), and taking every instance out of rotation would turn a degradation into an outage.
    checks["cache"] = runtime.cache.status()
    checks["rate_limits"] = runtime.limiter.status()
    # A remote backend's state, e.g. "runpod (open; fallback local)": its circuit breaker and
    # fallback (dupify.inference.remote); the inference check above ran one real call there.
    if hasattr(runtime.backend, "state"):
        checks["inference_backend"] = str(runtime.backend.state)
    return {"status": "ready", "checks": checks}
