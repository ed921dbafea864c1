"""POST /v1/rank: one query (a text or an image) and up to 64 documents (texts or images),
ordered by cosine similarity in one model's space: search UIs and "find the look-alike"
without a vector database."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from dupify.api.deps import require_scope
from dupify.api.embeddings import item_vectors
from dupify.api.inputs import read_image_request, validated
from dupify.api.schemas import AUTH_ERRORS, IMAGE_ERRORS, error_responses
from dupify.api.texts import MAX_TEXTS, split_items
from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.limits.cache import x_cache
from dupify.server.json import VectorJSONResponse

router = APIRouter(tags=["search"])

# Texts: the query and 64 documents. Images: 64 in all, the query included (a request's images
# must fit a model's queue at once, whose smallest allowed size is 64).
MAX_DOCUMENTS = MAX_TEXTS


class RankRequest(BaseModel):
    """One query and the documents to order by their similarity to it."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="A model with the text modality (see /v1/models).")
    query: str = Field(
        min_length=1, description="A text, or an image (base64, a data URI or an image URL)."
    )
    documents: list[str] = Field(
        min_length=1,
        max_length=MAX_DOCUMENTS,
        description=f"1..{MAX_DOCUMENTS} texts or images, told apart as in /v1/embeddings.",
    )
    top_n: int | None = Field(None, ge=1, description="Return only the best N documents.")


class RankResult(BaseModel):
    index: int = Field(description="The document's place in `documents`.")
    score: float = Field(description="Cosine similarity of the document to the query, -1..1.")


class RankUsage(BaseModel):
    images: int
    texts: int
    cached_images: int = Field(description="Inputs (images or texts) answered from the cache.")


class RankResponse(BaseModel):
    object: Literal["rank"] = "rank"
    model: str
    results: list[RankResult] = Field(description="Best first; ties keep document order.")
    usage: RankUsage


@router.post(
    "/v1/rank",
    response_model=RankResponse,
    responses=error_responses(
        *AUTH_ERRORS,
        *IMAGE_ERRORS,
        "model_not_found",
        "quota_exceeded",
        "text_not_supported",
        "text_too_long",
    ),
    summary="Rank texts or images by similarity to a text or image query",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RankRequest.model_json_schema()}},
        }
    },
)
async def rank(
    request: Request, ctx: RequestContext = Depends(require_scope("embeddings"))
) -> VectorJSONResponse:
    runtime, body = await read_image_request(request)
    if body.form != "json":
        raise ApiError("invalid_request", "/v1/rank takes a JSON body", param="body")
    options = validated(RankRequest, body.json, strict=True)
    model = runtime.registry.text_model(options.model)
    ctx.model = model.id
    pairs = [("query", options.query)]
    pairs += [(f"documents[{index}]", item) for index, item in enumerate(options.documents)]
    pending = split_items(pairs, MAX_DOCUMENTS, MAX_DOCUMENTS + 1, "documents")
    await runtime.meter.charge(ctx, pending.count)  # one unit per input, query included
    split = await pending.resolved(request)
    vectors, hits, _ = await item_vectors(ctx, runtime, model, split)
    query, documents = vectors[0], np.stack(vectors[1:])
    scores = documents.astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[: options.top_n or len(scores)]
    response = RankResponse.model_validate(
        {
            "model": model.id,
            "results": [
                {"index": int(index), "score": round(float(scores[index]), 6)} for index in order
            ],
            "usage": {
                "images": len(split.images),
                "texts": len(split.texts),
                "cached_images": ctx.cached_images,
            },
        }
    )
    state = x_cache(hits, split.count)
    return VectorJSONResponse(response.model_dump(), headers={"X-Cache": state})
