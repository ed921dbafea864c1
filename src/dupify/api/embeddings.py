"""The public HTTP API, one function per endpoint, readable top-down."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dupify.api.deps import authenticate_request, get_runtime, require_scope
from dupify.api.inputs import encode_vector, image_inputs, read_image_request, request_options
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
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.inference.registry import EMBEDDING_ROLE
from dupify.limits.cache import cached_results
from dupify.pipeline.post import with_dimensions

router = APIRouter()


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    responses=error_responses(*AUTH_ERRORS, *IMAGE_ERRORS, "model_not_found", "quota_exceeded"),
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
) -> JSONResponse:
    runtime, body = await read_image_request(request)
    limits = runtime.settings.limits
    options: EmbeddingOptions = request_options(
        body, dict(request.query_params), EmbeddingsRequest, EmbeddingOptions
    )
    images = image_inputs(body, limits, limits.max_images_embeddings)
    model = runtime.registry.get(options.model or runtime.registry.roles[EMBEDDING_ROLE])
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
    full = np.stack([np.frombuffer(result, dtype="<f4") for result in results])
    vectors = with_dimensions(full, options.dimensions)
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
    return {"status": "ready", "checks": checks}
