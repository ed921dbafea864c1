"""Helpers every image endpoint shares: reading the body and its images in any input form,
validating options, counting images, encoding vectors."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from dupify.api.deps import get_context, get_runtime
from dupify.config import ImageLimits
from dupify.errors import ApiError, invalid_request_from
from dupify.images.inputs import RequestBody, decode_base64_image, read_request_body
from dupify.server.runtime import Runtime

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_image_request(request: Request) -> tuple[Runtime, RequestBody]:
    """The runtime and the request's body in whichever input form, read under the byte caps
    (after the key was checked) and noted for the usage log."""
    runtime = get_runtime(request)
    body = await read_request_body(request, runtime.settings.limits)
    get_context(request).bytes_in = body.size
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


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """A float list, or base64 of little-endian float32 (OpenAI's `encoding_format=base64`)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in vector]


def image_inputs(
    body: RequestBody, limits: ImageLimits, maximum: int, minimum: int = 1
) -> list[tuple[str, bytes]]:
    """The (param, image bytes) pairs of an image endpoint, in any input form: JSON `input` (one
    base64 image or data URI, or a list), a raw image body, or multipart `file` parts; between
    `minimum` and `maximum` images."""
    if body.form == "json":
        items = body.json.get("input")
        if isinstance(items, str):
            pairs = [("input", items)]
        elif isinstance(items, list) and all(isinstance(item, str) for item in items):
            pairs = [(f"input[{index}]", item) for index, item in enumerate(items)]
        else:
            raise ApiError(
                "invalid_request",
                "input: expected an image (base64 or a data URI) or a list of them",
                param="input",
            )
        check_count(len(pairs), maximum, "input", minimum)
        return [(name, decode_base64_image(item, name, limits)) for name, item in pairs]
    if body.form == "raw":
        check_count(1, maximum, "body", minimum)
        return [("body", body.files[0][1])]
    files = body.files_named("file")
    check_count(len(files), maximum, "file", minimum)
    return [(f"file[{index}]", data) for index, data in enumerate(files)]
