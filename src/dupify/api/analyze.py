"""The analysis endpoints: POST /v1/analyze, /v1/compare and /v1/duplicates, readable top-down.

Each follows the embeddings route's path: key and rate limit (dependencies), body read with
caps, quota reserved, then the per-image result cache in front of decoding and inference.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from dupify.analysis.frames import GRID, REGIONS_VERSION, Regions, RegionSpace
from dupify.analysis.similarity import (
    DEFAULT_THRESHOLDS,
    Fingerprint,
    compare,
    group_duplicates,
)
from dupify.api.deps import require_scope
from dupify.api.inputs import (
    ImageItem,
    encode_vector,
    image_items,
    image_outcomes,
    images_of,
    read_image_request,
    request_options,
    validated,
)
from dupify.api.schemas import (
    AUTH_ERRORS,
    ENCODING_FORMAT_FIELD,
    FEATURES_PATTERN,
    IMAGE_ERRORS,
    MODEL_FIELD,
    AnalyzeOptions,
    AnalyzeRequest,
    AnalyzeResponse,
    CompareRequest,
    CompareResponse,
    DuplicatesRequest,
    DuplicatesResponse,
    error_responses,
    form_field,
    image_files,
    image_part,
    image_request_body,
)
from dupify.api.texts import label_set, label_vectors
from dupify.config import MAX_ANALYZE_IMAGES, MAX_DUPLICATES_IMAGES
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.images.inputs import RequestBody
from dupify.inference.registry import EMBEDDING_ROLE, FINGERPRINT_ROLE
from dupify.limits.cache import cached_results
from dupify.pipeline.features import (
    DEFAULT_FEATURES,
    AnalysisOptions,
    model_versions,
    models_for,
)
from dupify.server.json import VectorJSONResponse
from dupify.server.runtime import Runtime

router = APIRouter(tags=["images"])

# Bumped when the pixel measures (colours, hashes, quality) change, so old cached results die.
PIXEL_MEASURES_VERSION = "pixels@1"


@router.post(
    "/v1/analyze",
    response_model=AnalyzeResponse,
    responses=error_responses(
        *AUTH_ERRORS, *IMAGE_ERRORS, "model_not_found", "quota_exceeded", "text_not_supported"
    ),
    openapi_extra=image_request_body(
        AnalyzeRequest,
        {
            "file": image_files(1, MAX_ANALYZE_IMAGES),
            "features": form_field(
                "Comma-separated features (default: " + ",".join(sorted(DEFAULT_FEATURES)) + ").",
                pattern=FEATURES_PATTERN,
            ),
            "model": MODEL_FIELD,
            "encoding_format": ENCODING_FORMAT_FIELD,
            "top_k": form_field("How many labels.", type="integer", minimum=1, maximum=20),
            "labels_model": form_field("A model with the text modality: zero-shot `labels`."),
            "candidate_labels": form_field("Comma-separated labels for `labels_model`."),
            "max_colors": form_field(
                "How many palette colours.", type="integer", minimum=1, maximum=10
            ),
        },
    ),
    summary="Analyze images: labels, safety, colours, hashes, quality, metadata, text, faces",
)
async def analyze(
    request: Request, ctx: RequestContext = Depends(require_scope("analyze"))
) -> VectorJSONResponse:
    runtime, body = await read_image_request(request)
    query = dict(request.query_params)
    options = request_options(body, query, AnalyzeRequest, AnalyzeOptions)
    items = image_items(body, MAX_ANALYZE_IMAGES)
    features = frozenset(options.features or DEFAULT_FEATURES)
    labels = label_set(
        runtime, options.labels_model, options.candidate_labels, "labels" in features
    )
    analysis = AnalysisOptions(
        features=features,
        embedding_model=options.model or runtime.registry.roles[EMBEDDING_ROLE],
        top_k=options.top_k,
        max_colors=options.max_colors,
        labels_model=labels.model.id if labels else None,
        label_names=labels.names if labels else (),
    )
    # An unknown model is the request's error; the ones that run are the usage row's `model`.
    ctx.model = "+".join(models_for(runtime.registry, analysis)) or None
    billed_labels = labels.billed if labels and "labels" in features else 0
    await runtime.meter.charge(ctx, len(items) + billed_labels)
    # A URL that cannot be fetched is that image's error entry, like an image that won't decode.
    inputs = await image_outcomes(request, items)
    images = [(param, data) for param, data in inputs if isinstance(data, bytes)]
    if labels is not None and "labels" in features:
        analysis = replace(analysis, label_vectors=await label_vectors(ctx, runtime, labels))

    async def analyze_missing(indices: list[int]) -> list[bytes | ApiError]:
        outcomes = await runtime.pipeline.analyze(
            [images[i][1] for i in indices], analysis, account=ctx.caller
        )
        return [
            outcome if isinstance(outcome, ApiError) else _result_bytes(outcome)
            for outcome in outcomes
        ]

    versions = model_versions(runtime.registry, analysis)
    outcomes, cache_state = await cached_results(
        ctx,
        runtime.cache,
        runtime.secret,
        [data for _, data in images],
        "+".join([PIXEL_MEASURES_VERSION, *sorted(set(versions.values()))]),
        {
            "result": "analysis",
            "features": sorted(analysis.features),
            "embedding_model": analysis.embedding_model,
            "top_k": analysis.top_k,
            "max_colors": analysis.max_colors,
            **({"label_set": labels.digest()} if labels else {}),
        },
        analyze_missing,
    )
    analysed = iter(outcomes)
    results: list[dict[str, Any]] = []
    for index, (param, data) in enumerate(inputs):
        outcome = data if isinstance(data, ApiError) else next(analysed)
        if isinstance(outcome, ApiError):
            error = outcome.at(param).body(ctx.request_id)["error"]
            results.append({"index": index, "error": error})
            continue
        result = json.loads(outcome)
        if "embedding" in result:
            vector = np.asarray(result["embedding"], dtype=np.float32)
            result["embedding"] = encode_vector(vector, options.encoding_format)
        results.append({"index": index, **result})
    processed = sum(1 for outcome in outcomes if not isinstance(outcome, ApiError))
    # Images that failed are not billed; the request's candidate labels are, one unit each.
    await runtime.meter.settle(ctx, processed + billed_labels)
    usage = {"images": processed, "cached_images": ctx.cached_images}
    return VectorJSONResponse(
        {
            "object": "analysis",
            "results": results,
            "models": versions,
            "usage": usage | ({"texts": billed_labels} if billed_labels else {}),
        },
        headers={"X-Cache": cache_state},
    )


def _result_bytes(result: dict[str, Any]) -> bytes:
    """One image's analysis as cacheable JSON (the embedding as a float list)."""
    if "embedding" in result:
        result = {**result, "embedding": [float(value) for value in result["embedding"]]}
    return json.dumps(result, separators=(",", ":")).encode()


@router.post(
    "/v1/compare",
    response_model=CompareResponse,
    responses=error_responses(*AUTH_ERRORS, *IMAGE_ERRORS, "quota_exceeded"),
    openapi_extra=image_request_body(
        CompareRequest,
        {
            "a": image_part("The first image."),
            "b": image_part("The second image."),
        },
        required_parts=("a", "b"),
        raw=False,
    ),
    summary="Compare two images: exact, near-duplicate, similar or different",
)
async def compare_images(
    request: Request, ctx: RequestContext = Depends(require_scope("analyze"))
) -> VectorJSONResponse:
    runtime, body = await read_image_request(request)
    items = _compare_items(body)
    ctx.model = runtime.registry.roles[FINGERPRINT_ROLE]
    await runtime.meter.charge(ctx, len(items))
    images = await images_of(request, items)
    (first, second), cache_state = await _fingerprints(ctx, runtime, images)
    return VectorJSONResponse(
        {
            "object": "comparison",
            "model": runtime.registry.roles[FINGERPRINT_ROLE],
            **compare(first, second, DEFAULT_THRESHOLDS),
            "usage": {"images": 2, "cached_images": ctx.cached_images},
        },
        headers={"X-Cache": cache_state},
    )


def _compare_items(body: RequestBody) -> list[ImageItem]:
    """`a` and `b`, from JSON fields or multipart parts (not yet decoded or fetched)."""
    if body.form == "json":
        options = validated(CompareRequest, body.json, strict=True)
        return [("a", options.a), ("b", options.b)]
    if body.form == "raw":
        raise ApiError(
            "invalid_request",
            "compare takes two images: send JSON with `a` and `b`, or multipart parts `a` and `b`",
        )
    images: list[ImageItem] = []
    for name in ("a", "b"):
        parts = body.files_named(name)
        if len(parts) != 1:
            raise ApiError(
                "invalid_request",
                f"{name}: expected exactly one multipart part named {name!r}, got {len(parts)}",
                param=name,
            )
        images.append((name, parts[0]))
    return images


@router.post(
    "/v1/duplicates",
    response_model=DuplicatesResponse,
    responses=error_responses(*AUTH_ERRORS, *IMAGE_ERRORS, "quota_exceeded"),
    openapi_extra=image_request_body(
        DuplicatesRequest, {"file": image_files(2, MAX_DUPLICATES_IMAGES)}, raw=False
    ),
    summary="Group the duplicates in a batch of 2..64 images",
)
async def find_duplicates(
    request: Request, ctx: RequestContext = Depends(require_scope("analyze"))
) -> VectorJSONResponse:
    runtime, body = await read_image_request(request)
    if body.form == "json":
        validated(DuplicatesRequest, body.json, strict=True)
    items = image_items(body, MAX_DUPLICATES_IMAGES, minimum=2)
    ctx.model = runtime.registry.roles[FINGERPRINT_ROLE]
    await runtime.meter.charge(ctx, len(items))
    images = await images_of(request, items)
    fingerprints, cache_state = await _fingerprints(ctx, runtime, images)
    return VectorJSONResponse(
        {
            "object": "duplicates",
            "model": runtime.registry.roles[FINGERPRINT_ROLE],
            "groups": group_duplicates(fingerprints, DEFAULT_THRESHOLDS),
            "thresholds": DEFAULT_THRESHOLDS.as_dict(),
            "usage": {"images": len(images), "cached_images": ctx.cached_images},
        },
        headers={"X-Cache": cache_state},
    )


async def _fingerprints(
    ctx: RequestContext, runtime: Runtime, images: Sequence[tuple[str, bytes]]
) -> tuple[list[Fingerprint], str]:
    """Each image's hashes and fingerprint-model embedding, through the cache (the route has
    reserved their quota)."""
    model = runtime.registry.for_role(FINGERPRINT_ROLE)

    async def fingerprint_missing(indices: list[int]) -> list[bytes]:
        chosen = [images[index] for index in indices]
        fingerprints = await runtime.pipeline.fingerprints_all(
            [data for _, data in chosen], [param for param, _ in chosen], account=ctx.caller
        )
        return [_fingerprint_bytes(fingerprint) for fingerprint in fingerprints]

    stored, cache_state = await cached_results(
        ctx,
        runtime.cache,
        runtime.secret,
        [data for _, data in images],
        f"{model.id}@{model.version}+{PIXEL_MEASURES_VERSION}+regions{REGIONS_VERSION}",
        {"result": "fingerprint"},
        fingerprint_missing,
    )
    return [_fingerprint_from_bytes(value, model.region_space) for value in stored], cache_state


def _fingerprint_bytes(fingerprint: Fingerprint) -> bytes:
    """Hashes, the embedding and the cell descriptors as cacheable JSON: derived values only,
    never the image (the cells are 8x8 pooled feature vectors, not pixels)."""
    regions = fingerprint.regions
    return json.dumps(
        {
            "sha256": fingerprint.sha256,
            "pixel_sha256": fingerprint.pixel_sha256,
            "phash": fingerprint.phash,
            "dhash": fingerprint.dhash,
            "embedding": encode_vector(np.asarray(fingerprint.embedding), "base64"),
            "regions": None
            if regions is None
            else base64.b64encode(regions.cells.astype("<f2").tobytes()).decode("ascii"),
        }
    ).encode()


def _fingerprint_from_bytes(value: bytes, space: RegionSpace | None) -> Fingerprint:
    fields = json.loads(value)
    embedding = np.frombuffer(base64.b64decode(fields.pop("embedding")), dtype="<f4")
    packed = fields.pop("regions")
    regions = None
    if packed is not None and space is not None:
        cells = np.frombuffer(base64.b64decode(packed), dtype="<f2").astype(np.float16)
        regions = Regions(cells.reshape(GRID * GRID, -1), space)
    return Fingerprint(embedding=embedding.astype(np.float32), regions=regions, **fields)
