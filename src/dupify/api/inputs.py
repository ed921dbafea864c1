"""Helpers every image endpoint shares: reading the body and its images in any input form,
validating options, counting images, encoding vectors."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from dupify.api.deps import get_context, get_runtime
from dupify.errors import ApiError, invalid_request_from
from dupify.images.inputs import (
    RAW_IMAGE_TYPES,
    RequestBody,
    decode_base64_image,
    read_request_body,
)
from dupify.server.runtime import Runtime

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_image_request(request: Request) -> tuple[Runtime, RequestBody]:
    """The runtime and the request's body in whichever input form, read under the byte caps
    (after the key was checked) and noted for the usage log."""
    runtime = get_runtime(request)
    ctx = get_context(request)
    limits = runtime.settings.limits
    # Room for the body in the process's budget first (the memory bound, images.bodies). A raw
    # image declared over the per-image cap needs none: it is refused before it is read.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    cap = limits.max_body_bytes
    if media_type in RAW_IMAGE_TYPES:
        cap = min(cap, limits.max_image_bytes)
    await runtime.body_room.hold(request.headers.get("content-length"), cap, ctx.finishers)
    body = await read_request_body(request, limits)
    ctx.bytes_in = body.size
    return runtime, body


def validated(schema: type[ModelT], data: dict[str, Any], *, strict: bool = False) -> ModelT:
    """The request options, or `invalid_request` naming the first field at fault. `strict` for a
    JSON body, whose values have their JSON types (`8` is an integer, `"8"` and `true` are not);
    not for form fields and query parameters, where every value is text."""
    try:
        return schema.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise invalid_request_from(exc.errors()) from exc


def request_options(
    body: RequestBody, query: dict[str, str], json_schema: type[ModelT], form_schema: type[ModelT]
) -> ModelT:
    """An image request's options: a JSON body validated whole, strictly, against `json_schema`
    (the schema the OpenAPI document shows for it); otherwise the form fields over the query
    parameters, as text, against `form_schema`."""
    if body.form == "json":
        return validated(json_schema, body.json, strict=True)
    return validated(form_schema, {**query, **body.fields})


def check_count(count: int, maximum: int, param: str, minimum: int = 1) -> None:
    if count < minimum:
        needed = "at least one image is" if minimum == 1 else f"at least {minimum} images are"
        raise ApiError("invalid_request", f"{param}: {needed} required", param=param)
    if count > maximum:
        raise ApiError(
            "too_many_images",
            f"{count} images sent; this endpoint takes at most {maximum} per request",
            param=param,
        )


def encode_vector(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    """The vector as float32 (JSON floats, written by `server.json.VectorJSONResponse` from the
    array itself), or base64 of little-endian float32 (OpenAI's `encoding_format=base64`)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vector, dtype=np.float32)


# An image as the request gave it, named by its param: uploaded bytes, or a JSON string (base64,
# a data URI or a URL) that is decoded or fetched only after the quota is reserved (`images_of`).
ImageItem = tuple[str, bytes | str]


def image_items(body: RequestBody, maximum: int, minimum: int = 1) -> list[ImageItem]:
    """The images of an image endpoint, in any input form: JSON `input` (one image as base64, a
    data URI or a URL, or a list of them), a raw image body, or multipart `file` parts; between
    `minimum` and `maximum` of them. Nothing is decoded or fetched yet: a route reserves the
    quota for them first, so a request over its quota costs no fetch."""
    if body.form == "json":
        items = body.json.get("input")
        if isinstance(items, str):
            pairs: list[ImageItem] = [("input", items)]
        elif isinstance(items, list) and all(isinstance(item, str) for item in items):
            pairs = [(f"input[{index}]", item) for index, item in enumerate(items)]
        else:
            raise ApiError(
                "invalid_request",
                "input: expected an image (base64, a data URI or a URL) or a list of them",
                param="input",
            )
        check_count(len(pairs), maximum, "input", minimum)
        return pairs
    if body.form == "raw":
        check_count(1, maximum, "body", minimum)
        return [("body", body.files[0][1])]
    files = body.files_named("file")
    check_count(len(files), maximum, "file", minimum)
    return [(f"file[{index}]", data) for index, data in enumerate(files)]


def is_url(item: str) -> bool:
    """Whether a JSON image item names a URL to fetch rather than carrying the image itself."""
    head = item[:8].lower()
    return head.startswith("https://") or head.startswith("http://")


async def images_of(request: Request, items: Sequence[ImageItem]) -> list[tuple[str, bytes]]:
    """Each item's bytes, in order: uploads as they are, base64 and data URIs decoded under the
    per-image cap, URLs fetched through the SSRF guard (dupify.images.fetch). The first item
    that fails, in request order, is the request's error."""
    images: list[tuple[str, bytes]] = []
    for param, outcome in await image_outcomes(request, items):
        if isinstance(outcome, ApiError):
            raise outcome
        images.append((param, outcome))
    return images


async def image_outcomes(
    request: Request, items: Sequence[ImageItem]
) -> list[tuple[str, bytes | ApiError]]:
    """Like `images_of`, but a URL that cannot be fetched is that image's own error, for the
    routes that answer per image (/v1/analyze). A malformed base64 item is still the request's
    error at once: it is the caller's mistake, not the image's."""
    runtime = get_runtime(request)
    outcomes: dict[int, bytes | ApiError] = {}
    urls: list[tuple[int, str, str]] = []
    for index, (param, item) in enumerate(items):
        if isinstance(item, bytes):
            outcomes[index] = item
        elif is_url(item):
            urls.append((index, param, item))
        else:
            outcomes[index] = decode_base64_image(item, param, runtime.settings.limits)
    if urls:
        fetched = await runtime.url_fetcher.fetch_all([(param, url) for _, param, url in urls])
        for (index, _, _), outcome in zip(urls, fetched, strict=True):
            outcomes[index] = outcome
        # The usage log counts what came in over the network for the request, fetched included.
        get_context(request).bytes_in += sum(len(o) for o in fetched if isinstance(o, bytes))
    return [(param, outcomes[index]) for index, (param, _) in enumerate(items)]
