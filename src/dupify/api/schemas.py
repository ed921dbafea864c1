"""Request and response shapes of the public API, and the OpenAPI fragments that document them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dupify.errors import ERROR_CODES


class EmbeddingOptions(BaseModel):
    """The embedding options; in multipart and raw requests they come as form fields or query."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Model id; the default model when omitted.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64` returns little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Truncate to this many dimensions and re-normalise."
    )


class EmbeddingsRequest(EmbeddingOptions):
    """OpenAI-compatible: `input` holds base64 images or `data:image/…;base64,` URIs."""

    input: str | list[str] = Field(
        description="One image or a list of 1..32, each base64 or a data URI."
    )
    user: str | None = Field(
        None, description="Accepted for OpenAI compatibility; ignored and never stored."
    )


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    images: int
    cached_images: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingItem]
    usage: EmbeddingsUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    task: str
    dimensions: int
    version: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    request_id: str | None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code].status, []).append(code)
    return {
        status: {
            "model": ErrorEnvelope,
            "description": "; ".join(
                f"`{code}`: {ERROR_CODES[code].description}" for code in sorted(names)
            ),
        }
        for status, names in sorted(by_status.items())
    }


# Every authenticated route can also answer 429 `rate_limited` (the per-key rate limit).
AUTH_ERRORS = (
    "missing_api_key",
    "invalid_api_key",
    "account_suspended",
    "insufficient_scope",
    "rate_limited",
)
IMAGE_ERRORS = (
    "payload_too_large",
    "unsupported_media_type",
    "invalid_image",
    "image_too_large",
    "too_many_frames",
    "image_decode_timeout",
    "too_many_images",
    "invalid_request",
    "overloaded",
    "internal_error",
)


def image_request_body(json_model: type[BaseModel], form_fields: dict[str, str]) -> dict[str, Any]:
    """`openapi_extra` for an image endpoint: the body is read by hand (to check the key before
    reading it and to keep it in memory), so its three forms are declared here."""
    form_properties: dict[str, Any] = {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
    }
    form_properties.update(
        {name: {"type": "string", "description": text} for name, text in form_fields.items()}
    )
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_model.model_json_schema()},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": form_properties}
                },
                "image/jpeg": binary,
                "image/png": binary,
                "image/webp": binary,
                "image/gif": binary,
                "image/bmp": binary,
            },
        }
    }


Feature = Literal[
    "labels", "safety", "colors", "hashes", "quality", "metadata", "text", "faces", "embedding"
]


class AnalyzeOptions(BaseModel):
    """Analysis options; in multipart and raw requests they come as form fields or query."""

    model_config = ConfigDict(extra="ignore")

    features: list[Feature] | None = Field(
        None,
        min_length=1,
        description="Features to compute; default labels, safety, colors, hashes, quality, "
        "metadata. `text`, `faces` and `embedding` are opt-in. A comma-separated string works too.",
    )
    model: str | None = Field(None, description="Embedding model for the `embedding` feature.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="Encoding of the `embedding` feature, as in /v1/embeddings."
    )
    top_k: int = Field(5, ge=1, le=20, description="How many labels to return.")
    max_colors: int = Field(5, ge=1, le=10, description="How many palette colours to return.")

    @field_validator("features", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class AnalyzeRequest(AnalyzeOptions):
    input: str | list[str] = Field(
        description="One image or a list of 1..16, each base64 or a data URI."
    )


class Metadata(BaseModel):
    width: int
    height: int
    format: str
    mode: str
    animated: bool
    exif_gps_present: bool = Field(
        description="Whether the file carries GPS coordinates (a privacy hint; the coordinates "
        "themselves are never returned)."
    )


class Label(BaseModel):
    label: str
    score: float


class Safety(BaseModel):
    nsfw: float
    verdict: Literal["safe", "questionable", "unsafe"]


class Color(BaseModel):
    hex: str
    fraction: float


class Hashes(BaseModel):
    sha256: str
    phash: str
    dhash: str


class Quality(BaseModel):
    sharpness: float
    brightness: float
    contrast: float


class TextLine(BaseModel):
    text: str
    confidence: float
    box: list[list[float]]


class Face(BaseModel):
    box: list[int] = Field(description="[x, y, width, height] in original-image pixels.")
    confidence: float


class AnalysisResult(BaseModel):
    """One image's result: the requested features, or `error` (same fields as the envelope)."""

    index: int
    error: ErrorBody | None = None
    metadata: Metadata | None = None
    labels: list[Label] | None = None
    safety: Safety | None = None
    colors: list[Color] | None = None
    hashes: Hashes | None = None
    quality: Quality | None = None
    text: list[TextLine] | None = None
    faces: list[Face] | None = None
    embedding: list[float] | str | None = None


class ImageUsage(BaseModel):
    images: int
    cached_images: int


class AnalyzeResponse(BaseModel):
    object: Literal["analysis"] = "analysis"
    results: list[AnalysisResult]
    models: dict[str, str]
    usage: ImageUsage


class CompareRequest(BaseModel):
    """Two images; compare and duplicates always use dupify-visual-1, the model the
    thresholds were calibrated on (docs/api.md)."""

    model_config = ConfigDict(extra="ignore")

    a: str = Field(description="The first image, base64 or a data URI.")
    b: str = Field(description="The second image, base64 or a data URI.")


Verdict = Literal["exact_duplicate", "near_duplicate", "similar", "different"]


class CompareResponse(BaseModel):
    object: Literal["comparison"] = "comparison"
    model: str
    verdict: Verdict
    similarity: float
    hash_distance: dict[str, int]
    thresholds: dict[str, float]
    usage: ImageUsage


class DuplicatesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: list[str] = Field(description="2..64 images, each base64 or a data URI.")


class DuplicateGroup(BaseModel):
    indices: list[int]
    verdict: Verdict
    similarity: float


class DuplicatesResponse(BaseModel):
    object: Literal["duplicates"] = "duplicates"
    model: str
    groups: list[DuplicateGroup]
    thresholds: dict[str, float]
    usage: ImageUsage
