"""The public HTTP API, one function per endpoint, readable top-down."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dupify.api.deps import authenticate_request, get_runtime, require_scope
from dupify.api.inputs import check_count, encode_vector, read_image_request, validated
from dupify.api.schemas import (
    AUTH_ERRORS,
    IMAGE_ERRORS,
    EmbeddingOptions,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelList,
    error_responses,
    image_request_body,
)
from dupify.config import ImageLimits
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.images.inputs import RequestBody, decode_base64_image
from dupify.inference.models.base import unit_rows
from dupify.limits.cache import cached_results
from dupify.server.runtime import Runtime

router = APIRouter()


def _embedding_inputs(
    body: RequestBody, query: dict[str, str], limits: ImageLimits
) -> tuple[EmbeddingOptions, list[tuple[str, bytes]]]:
    """The options and the (param name, image bytes) pairs, whichever form the request took."""
    if body.form == "json":
        request = validated(EmbeddingsRequest, body.json)
        items = [request.input] if isinstance(request.input, str) else request.input
        names = (
            ["input"]
            if isinstance(request.input, str)
            else [f"input[{index}]" for index in range(len(items))]
        )
        check_count(len(items), limits.max_images_embeddings, "input")
        return request, [
            (name, decode_base64_image(item, name, limits))
            for name, item in zip(names, items, strict=True)
        ]
    options = validated(EmbeddingOptions, {**query, **body.fields})
    if body.form == "raw":
        return options, [("body", body.files[0][1])]
    files = body.files_named("file")
    check_count(len(files), limits.max_images_embeddings, "file")
    return options, [(f"file[{index}]", data) for index, data in enumerate(files)]


async def _decode_all(
    runtime: Runtime, images: list[tuple[str, bytes]], working_side: int
) -> list[np.ndarray]:
    """Decode every image in the worker pool; the first failure (in request order) is the answer."""
    results = await asyncio.gather(
        *(runtime.decoder.decode(data, working_side) for _, data in images),
        return_exceptions=True,
    )
    pixels: list[np.ndarray] = []
    for (param, _), result in zip(images, results, strict=True):
        if isinstance(result, ApiError):
            raise result.at(param)
        if isinstance(result, BaseException):
            raise result
        pixels.append(result.pixels)
    return pixels


def _truncate(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    return unit_rows(vectors[:, :dimensions])


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    responses=error_responses(*AUTH_ERRORS, *IMAGE_ERRORS, "model_not_found", "quota_exceeded"),
    openapi_extra=image_request_body(
        EmbeddingsRequest,
        {
            "model": "Model id (multipart/raw forms; also a query parameter).",
            "encoding_format": "`float` or `base64`.",
            "dimensions": "Truncate to this many dimensions and re-normalise.",
        },
    ),
    summary="Embed images",
    tags=["images"],
)
async def create_embeddings(
    request: Request, ctx: RequestContext = Depends(require_scope("embeddings"))
) -> JSONResponse:
    runtime, body = await read_image_request(request)
    limits = runtime.settings.limits
    options, images = _embedding_inputs(body, dict(request.query_params), limits)
    model = runtime.registry.get(options.model or runtime.settings.default_model)
    if options.dimensions is not None and options.dimensions > model.dimensions:
        raise ApiError(
            "invalid_request",
            f"dimensions: {model.id} has {model.dimensions} dimensions; ask for at most that",
            param="dimensions",
        )
    await runtime.meter.charge(ctx, len(images))

    async def embed_missing(indices: list[int]) -> list[bytes]:
        # Only cache misses reach the decoder and the model; the full vector is cached (as
        # little-endian float32) so any `dimensions` can be served from it.
        chosen = [images[index] for index in indices]
        pixels = await _decode_all(runtime, chosen, model.working_side)
        tensors = await asyncio.gather(*(asyncio.to_thread(model.preprocess, p) for p in pixels))
        full = await runtime.registry.embed(model.id, list(tensors))
        return [row.astype("<f4").tobytes() for row in full]

    results, cache_state = await cached_results(
        ctx,
        runtime.cache,
        runtime.secret,
        [data for _, data in images],
        f"{model.id}@{model.version}",
        {"result": "embedding"},
        embed_missing,
    )
    full = np.stack([np.frombuffer(result, dtype="<f4") for result in results])
    vectors = _truncate(full, options.dimensions)
    response = EmbeddingsResponse.model_validate(
        {
            "model": model.id,
            "data": [
                {"index": index, "embedding": encode_vector(vector, options.encoding_format)}
                for index, vector in enumerate(vectors)
            ],
            "usage": {"images": len(images), "cached_images": ctx.cached_images},
        }
    )
    return JSONResponse(response.model_dump(), headers={"X-Cache": cache_state})


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
    return ModelList.model_validate({"data": get_runtime(request).registry.describe()})


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
        ("inference", runtime.registry.warm_up()),
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
    return {"status": "ready", "checks": checks}
