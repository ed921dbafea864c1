"""Reads an image request in its three forms (JSON base64, multipart, raw), in memory, with caps.

The body is streamed and counted as it arrives, so an oversized upload is refused (413) before it
is buffered whole. Multipart is parsed here with python-multipart's streaming parser into memory:
Starlette's own form parser spools parts over 1 MiB to a temporary file, and images must never
touch disk. The readers take any `IncomingBody` (Starlette's `Request` is one), so nothing here
depends on the web framework; a client that leaves mid-body is the HTTP layer's to answer
(dupify.server.error_handlers).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from python_multipart.multipart import MultipartParser, parse_options_header

from dupify.config import ImageLimits
from dupify.errors import ApiError

RAW_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"})
MAX_FORM_FIELD_BYTES = 64 * 1024
MAX_MULTIPART_PARTS = 128
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)
_WHITESPACE = re.compile(rb"\s+")


class IncomingBody(Protocol):
    """What the readers need of an HTTP request: its headers and its body's chunks."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def stream(self) -> AsyncIterator[bytes]: ...


@dataclass
class RequestBody:
    """What an image request carried: JSON fields, or form fields and files, or one raw image."""

    form: Literal["json", "multipart", "raw"]
    size: int
    json: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def files_named(self, name: str) -> list[bytes]:
        return [data for part_name, data in self.files if part_name == name]


async def read_capped_body(request: IncomingBody, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `max_bytes` (declared or not)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _body_too_large(max_bytes)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _body_too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _body_too_large(max_bytes: int) -> ApiError:
    return ApiError(
        "payload_too_large", f"request body is larger than the limit of {max_bytes} bytes"
    )


def _image_too_large(param: str, max_bytes: int) -> ApiError:
    return ApiError(
        "payload_too_large",
        f"{param} is larger than the per-image limit of {max_bytes} bytes",
        param=param,
    )


async def read_request_body(request: IncomingBody, limits: ImageLimits) -> RequestBody:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    media_type = content_type.decode("latin-1").lower()
    if media_type == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError("invalid_request", "multipart body without a boundary")
        return await _read_multipart(request, boundary, limits)
    body = await read_capped_body(request, limits.max_body_bytes)
    if media_type in RAW_IMAGE_TYPES:
        if len(body) > limits.max_image_bytes:
            raise _image_too_large("body", limits.max_image_bytes)
        return RequestBody(form="raw", size=len(body), files=[("file", body)])
    if not body:
        raise ApiError("invalid_request", "the request body is empty")
    if media_type not in ("application/json", ""):
        raise ApiError(
            "unsupported_media_type",
            f"content type {media_type!r} is not accepted: send application/json, "
            "multipart/form-data or image/jpeg|png|webp|gif|bmp",
        )
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("invalid_request", f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ApiError("invalid_request", "the JSON body must be an object")
    return RequestBody(form="json", size=len(body), json=document)


class _MultipartCollector:
    """python-multipart callbacks that keep parts in memory and enforce the per-part caps."""

    def __init__(self, limits: ImageLimits) -> None:
        self.limits = limits
        self.fields: dict[str, str] = {}
        self.files: list[tuple[str, bytes]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._parts = 0

    def callbacks(self) -> Mapping[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_MULTIPART_PARTS:
            raise ApiError("invalid_request", f"more than {MAX_MULTIPART_PARTS} multipart parts")
        self._headers = {}
        self._chunks = []
        self._size = 0

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _part_name_and_kind(self) -> tuple[str, bool]:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        return name, b"filename" in options

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        name, is_file = self._part_name_and_kind()
        cap = self.limits.max_image_bytes if is_file else MAX_FORM_FIELD_BYTES
        if self._size > cap:
            if is_file:
                raise _image_too_large(f"{name}[{self._count(name)}]", cap)
            raise ApiError("invalid_request", f"form field {name!r} is too long", param=name)
        self._chunks.append(data[start:end])

    def _count(self, name: str) -> int:
        return sum(1 for part_name, _ in self.files if part_name == name)

    def _part_end(self) -> None:
        name, is_file = self._part_name_and_kind()
        value = b"".join(self._chunks)
        if is_file:
            self.files.append((name, value))
        else:
            try:
                self.fields[name] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(
                    "invalid_request", f"form field {name!r} is not UTF-8", param=name
                ) from exc


async def _read_multipart(
    request: IncomingBody, boundary: bytes, limits: ImageLimits
) -> RequestBody:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _body_too_large(limits.max_body_bytes)
    collector = _MultipartCollector(limits)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limits.max_body_bytes:
            raise _body_too_large(limits.max_body_bytes)
        _parse(parser.write, chunk)
    _parse(parser.finalize)
    return RequestBody(
        form="multipart", size=received, fields=collector.fields, files=collector.files
    )


def _parse(step: Callable[..., object], *args: bytes) -> None:
    """One step of the multipart parser; its own errors (malformed multipart) are the client's."""
    try:
        step(*args)
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError("invalid_request", f"malformed multipart body: {exc}") from exc


def decode_base64_image(value: object, param: str, limits: ImageLimits) -> bytes:
    """A bare base64 string or a `data:image/…;base64,` URI, to bytes, with the per-image cap."""
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{param} must be a base64 string", param=param)
    payload = value
    match = _DATA_URI.match(value)
    if match:
        payload = value[match.end() :]
    elif value.startswith("data:"):
        raise ApiError("invalid_request", f"{param} is a data URI without ';base64,'", param=param)
    encoded = _WHITESPACE.sub(b"", payload.encode("ascii", "replace"))
    if len(encoded) // 4 * 3 > limits.max_image_bytes + 2:
        raise _image_too_large(param, limits.max_image_bytes)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("invalid_request", f"{param} is not valid base64", param=param) from exc
    if len(data) > limits.max_image_bytes:
        raise _image_too_large(param, limits.max_image_bytes)
    return data
