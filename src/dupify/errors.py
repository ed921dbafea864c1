"""The one error envelope: ApiError with its stable codes (server.error_handlers renders it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    description: str


# The stable public codes (API.md section 1). Adding is fine; renaming breaks clients.
ERROR_CODES: dict[str, ErrorKind] = {
    "missing_api_key": ErrorKind(401, "authentication_error", "no Authorization header"),
    "invalid_api_key": ErrorKind(
        401, "authentication_error", "malformed, bad checksum, unknown, revoked or expired key"
    ),
    "account_suspended": ErrorKind(403, "permission_error", "account or key suspended"),
    "insufficient_scope": ErrorKind(403, "permission_error", "key lacks the endpoint's scope"),
    "rate_limited": ErrorKind(429, "rate_limit_error", "per-key request rate exceeded"),
    "quota_exceeded": ErrorKind(429, "rate_limit_error", "monthly image quota used up"),
    "decode_budget_exceeded": ErrorKind(
        429, "rate_limit_error", "the account's image decoding time a minute is used up"
    ),
    "payload_too_large": ErrorKind(413, "invalid_request_error", "request body over the cap"),
    "unsupported_media_type": ErrorKind(
        415, "invalid_request_error", "content type or image format not accepted"
    ),
    "invalid_image": ErrorKind(422, "invalid_request_error", "not a decodable image"),
    "image_too_large": ErrorKind(422, "invalid_request_error", "over the pixel or side cap"),
    "too_many_frames": ErrorKind(422, "invalid_request_error", "animation over the frame cap"),
    "image_decode_timeout": ErrorKind(
        422, "invalid_request_error", "decoding took longer than its budget"
    ),
    "request_too_complex": ErrorKind(
        422, "invalid_request_error", "the images together cost more to decode than a request may"
    ),
    "too_many_images": ErrorKind(400, "invalid_request_error", "too many images in one request"),
    "invalid_request": ErrorKind(400, "invalid_request_error", "malformed request or field"),
    "request_header_fields_too_large": ErrorKind(
        431, "invalid_request_error", "request line and headers over the size or count cap"
    ),
    "request_timeout": ErrorKind(
        408, "invalid_request_error", "request head or body arrived too slowly"
    ),
    "url_forbidden": ErrorKind(
        400,
        "invalid_request_error",
        "an image URL the SSRF guard refuses; the message names the rule",
    ),
    "url_unreachable": ErrorKind(
        422, "invalid_request_error", "an image URL's host did not resolve or connect"
    ),
    "url_timeout": ErrorKind(
        422, "invalid_request_error", "an image URL took over its time budget"
    ),
    "url_too_large": ErrorKind(
        422, "invalid_request_error", "an image URL's body is over the per-image byte cap"
    ),
    "url_bad_status": ErrorKind(
        422, "invalid_request_error", "an image URL answered a status other than 200"
    ),
    "model_not_found": ErrorKind(404, "invalid_request_error", "unknown model"),
    "text_not_supported": ErrorKind(
        400, "invalid_request_error", "text sent to a model that embeds images only"
    ),
    "text_too_long": ErrorKind(400, "invalid_request_error", "a text over the character cap"),
    "too_many_texts": ErrorKind(400, "invalid_request_error", "too many texts in one request"),
    "not_found": ErrorKind(404, "invalid_request_error", "no such route"),
    "method_not_allowed": ErrorKind(405, "invalid_request_error", "method not allowed here"),
    "overloaded": ErrorKind(503, "api_error", "inference queue full; retry after the header"),
    "not_ready": ErrorKind(503, "api_error", "a dependency is not answering"),
    "decoder_unavailable": ErrorKind(
        503, "api_error", "the image decoder processes stopped; retry after the header"
    ),
    "inference_unavailable": ErrorKind(
        503, "api_error", "the remote inference workers failed or did not answer in time"
    ),
    "internal_error": ErrorKind(500, "api_error", "a bug; the request id is logged"),
}


class ApiError(Exception):
    """An error with a stable public code; rendered as the envelope by `install_error_handlers`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Decoder workers send ApiError through a pipe; Exception's default pickling would call
        # __init__ with args=(message,) alone, fail in the parent and break the worker pool.
        return type(self), (self.code, self.message), self.__dict__

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code].status

    @property
    def type(self) -> str:
        return ERROR_CODES[self.code].type

    def at(self, param: str) -> ApiError:
        """The same error, attributed to a request field (e.g. `input[2]`)."""
        message = self.message if self.message.startswith(param) else f"{param}: {self.message}"
        return ApiError(self.code, message, param=param, headers=self.headers)

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
            }
        }


def invalid_request_from(errors: Sequence[Any]) -> ApiError:
    """The first of pydantic's validation errors as `invalid_request`, naming the field at fault."""
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    param = ".".join(location) or None
    message = str(first.get("msg", "Invalid request."))
    return ApiError("invalid_request", f"{param}: {message}" if param else message, param=param)
