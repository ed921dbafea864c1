"""Request and response shapes of the public API, and the OpenAPI fragments that document them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from dupify.api.label_options import ZeroShotOptions
from dupify.config import MAX_ANALYZE_IMAGES, MAX_DUPLICATES_IMAGES
from dupify.errors import ERROR_CODES
from dupify.images.inputs import RAW_IMAGE_TYPES

# JSON bodies are validated strictly (api.inputs.validated): `"8"`, `8.0` and `true` are not
# integers there. Form fields and query parameters are text, read as the form schemas say.
ImageData = Annotated[str, Field(min_length=1)]
EncodingFormat = Literal["float", "base64"]
_IMAGE = {
    "type": "string",
    "minLength": 1,
    "description": "base64, a `data:image/…;base64,` URI, or an `https://` URL to fetch",
}


def _images(minimum: int, maximum: int | None, single: bool = True) -> dict[str, Any]:
    """The schema of a JSON `input`: one image (when `single`) or a list of `minimum`..`maximum`."""
    listed: dict[str, Any] = {"type": "array", "items": _IMAGE, "minItems": minimum}
    if maximum is not None:
        listed["maxItems"] = maximum
    return {"anyOf": [_IMAGE, listed]} if single else listed


# JSON `input` fields: their schemas are declared here, but they are read and refused only by
# `api.inputs.image_items`, whose `param` names the image at fault (`input[2]`) and which answers
# `too_many_images` over the maximum. The embeddings maximum is a setting, so not declared.
EmbeddingImages = Annotated[object, WithJsonSchema(_images(1, None))]
AnalyzeImages = Annotated[object, WithJsonSchema(_images(1, MAX_ANALYZE_IMAGES))]
DuplicateImages = Annotated[object, WithJsonSchema(_images(2, MAX_DUPLICATES_IMAGES, single=False))]


class EmbeddingOptions(BaseModel):
    """The embedding options; in multipart and raw requests they come as form fields or query."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Model id; the default model when omitted.")
    encoding_format: EncodingFormat = Field(
        "float", description="`base64` returns little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Truncate to this many dimensions and re-normalise."
    )


class EmbeddingsRequest(EmbeddingOptions):
    """OpenAI-compatible: `input` holds base64 images, `data:image/…;base64,` URIs or URLs; for
    a model with the text modality, other strings are texts (docs/api.md: how they differ)."""

    input: EmbeddingImages = Field(
        description="One image or a list of 1 to `limits.max_images_embeddings` (32 by default), "
        "each base64, a data URI or an image URL."
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
    texts: int | None = Field(None, description="Texts embedded (models with a text tower).")
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
    modalities: list[str] = Field(default_factory=lambda: ["image"], examples=[["image", "text"]])


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
    "request_too_complex",
    "too_many_images",
    "invalid_request",
    "url_forbidden",
    "url_unreachable",
    "url_timeout",
    "url_too_large",
    "url_bad_status",
    "decode_budget_exceeded",
    "overloaded",
    "inference_unavailable",
    "decoder_unavailable",
    "internal_error",
)


def image_part(description: str) -> dict[str, Any]:
    """One multipart part holding an image's bytes."""
    return {"type": "string", "format": "binary", "description": description}


def image_files(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    """The multipart `file` parts of an image endpoint, one image each."""
    schema: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "minItems": minimum,
    }
    return schema | ({"maxItems": maximum} if maximum else {})


def form_field(description: str, **schema: Any) -> dict[str, Any]:
    """An option sent as a form field (or query parameter), whose value is text: `schema` says
    which text (a `type: integer` field holds an integer's decimal digits)."""
    return {"type": "string", **schema, "description": description}


def image_request_body(
    json_model: type[BaseModel],
    form_fields: dict[str, dict[str, Any]],
    *,
    required_parts: tuple[str, ...] = ("file",),
    raw: bool = True,
) -> dict[str, Any]:
    """`openapi_extra` for an image endpoint: the body is read by hand (to check the key before
    reading it and to keep it in memory), so its forms are declared here: JSON, multipart with
    `form_fields` (the image parts among them), and, when the endpoint takes one image, a raw
    image body."""
    content: dict[str, Any] = {
        "application/json": {"schema": json_model.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": form_fields,
                "required": list(required_parts),
            }
        },
    }
    if raw:
        binary = {"schema": {"type": "string", "format": "binary"}}
        content.update({media_type: binary for media_type in sorted(RAW_IMAGE_TYPES)})
    return {"requestBody": {"required": True, "content": content}}


# The options every form-taking endpoint shares, as form fields.
MODEL_FIELD = form_field("Model id; the default model when empty.")
ENCODING_FORMAT_FIELD = form_field(
    "`float` or `base64` (little-endian float32, base64-encoded).",
    enum=list(get_args(EncodingFormat)),
)


Feature = Literal[
    "labels", "safety", "colors", "hashes", "quality", "metadata", "text", "faces", "embedding"
]
_FEATURE_NAMES = "|".join(get_args(Feature))
# What `_split_comma_separated` accepts: feature names between commas, blanks around them.
FEATURES_PATTERN = rf"^[\s,]*(?:{_FEATURE_NAMES})(?:\s*,[\s,]*(?:{_FEATURE_NAMES}))*[\s,]*$"
_FEATURES_SCHEMA = {
    "anyOf": [
        {
            "type": "array",
            "items": {"type": "string", "enum": list(get_args(Feature))},
            "minItems": 1,
        },
        {"type": "string", "pattern": FEATURES_PATTERN},
        {"type": "null"},
    ]
}


class AnalyzeOptions(ZeroShotOptions):
    """Analysis options; in multipart and raw requests they come as form fields or query."""

    model_config = ConfigDict(extra="ignore")

    features: Annotated[list[Feature] | None, WithJsonSchema(_FEATURES_SCHEMA)] = Field(
        None,
        min_length=1,
        description="Features to compute; default labels, safety, colors, hashes, quality, "
        "metadata. `text`, `faces` and `embedding` are opt-in. A comma-separated string works too.",
    )
    model: str | None = Field(None, description="Embedding model for the `embedding` feature.")
    encoding_format: EncodingFormat = Field(
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
    input: AnalyzeImages = Field(
        description=f"One image or a list of 1..{MAX_ANALYZE_IMAGES}, each base64, a data URI "
        "or an image URL."
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
    """Two images, judged on the fingerprint model the thresholds were calibrated on."""

    model_config = ConfigDict(extra="ignore")

    a: ImageData = Field(description="The first image: base64, a data URI or an image URL.")
    b: ImageData = Field(description="The second image: base64, a data URI or an image URL.")


Verdict = Literal["exact_duplicate", "near_duplicate", "similar", "different"]
Tier = Literal["exact_bytes", "exact_pixels", "perceptual_hash", "descriptor"]  # what decided


class SharedFrame(BaseModel):  # a frame around different content (docs/api.md)
    area: float  # share of the 8x8 grid that is the same picture in both images
    content_similarity: float  # whitened cosine of the rest: the content


class CompareResponse(BaseModel):
    object: Literal["comparison"] = "comparison"
    model: str
    verdict: Verdict
    tier: Tier
    similarity: float
    hash_distance: dict[str, int]
    shared_frame: SharedFrame | None  # set when the shared-frame check turned the call down
    thresholds: dict[str, float]
    usage: ImageUsage


class DuplicatesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: DuplicateImages = Field(
        description=f"2..{MAX_DUPLICATES_IMAGES} images, each base64, a data URI or an image URL."
    )


class DuplicateGroup(BaseModel):
    indices: list[int]
    verdict: Verdict
    tier: Tier
    similarity: float


class DuplicatesResponse(BaseModel):
    object: Literal["duplicates"] = "duplicates"
    model: str
    groups: list[DuplicateGroup]
    thresholds: dict[str, float]
    usage: ImageUsage
