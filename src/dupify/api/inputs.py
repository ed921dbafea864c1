"""Helpers every image endpoint shares: reading the body, validating options, counting images,
encoding vectors."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from dupify.api.deps import get_context, get_runtime
from dupify.errors import ApiError, invalid_request_from
from dupify.images.inputs import RequestBody, read_request_body
from dupify.server.runtime import Runtime

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_image_request(request: Request) -> tuple[Runtime, RequestBody]:
    """The runtime and the request's body in whichever input form, read under the byte caps
    (after the key was checked) and noted for the usage log."""
    runtime = get_runtime(request)
    body = await read_request_body(request, runtime.settings.limits)
    get_context(request).bytes_in = body.size
    return runtime, body


def validated(schema: type[ModelT], data: dict[str, Any]) -> ModelT:
    """The request options, or `invalid_request` naming the first field at fault."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc.errors()) from exc


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
