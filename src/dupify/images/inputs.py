"""Reads an image request in its three forms (JSON base64, multipart, raw), in memory, with caps.

The body is streamed and counted as it arrives, so an oversized upload is refused (413) before it
is buffered whole, and a content type we do not take is refused (415) before it is read at all.
A refused body is drained before the answer goes out (`_Body.drain`). Multipart is parsed here
with python-multipart's streaming parser into memory: Starlette's own form parser spools parts
over 1 MiB to a temporary file, and images must never touch disk. The readers take any
`IncomingBody` (Starlette's `Request` is one), so nothing here depends on the web framework; a
client that leaves mid-body is the HTTP layer's to answer (dupify.server.error_handlers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
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
# How long a refused body may take to drain before the answer goes out anyway.
DRAIN_TIMEOUT_S = 10.0


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


class _Body:
    """A request body's chunks as they arrive, counted, so that a refusal can drain the rest."""

    def __init__(self, request: IncomingBody) -> None:
        self.headers = request.headers
        self._chunks = request.stream()
        self.received = 0

    def declared(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            return None
        self.received += len(chunk)
        return chunk

    async def drain(self, max_bytes: int) -> None:
        """Read and drop what is left of a refused body, at most `max_bytes` more and for at most
        DRAIN_TIMEOUT_S, so the answer does not go out while the client is still sending: a
        connection closed with unread bytes (after `Connection: close`, or an idle keep-alive)
        is reset, and the reset can destroy the answer before the client reads it. Not drained:
        a body that is declared longer than that (it would be reset all the same), and one whose
        client waits for `100 Continue` before sending (reading would invite it)."""
        declared = self.declared()
        if declared is not None and declared - self.received > max_bytes:
            return
        if self.received == 0 and self.headers.get("expect", "").lower() == "100-continue":
            return
        limit = self.received + max_bytes
        # A client gone mid-drain (the framework's disconnect error) or a deadline passed
        # leaves the refusal as the answer; nothing else can go wrong in reading bytes.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while self.received <= limit and await self.next_chunk() is not None:
                    pass


async def read_capped_body(request: IncomingBody, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `max_bytes` (declared or not)."""
    body = _Body(request)
    try:
        return await _read_capped(body, max_bytes, _body_too_large(max_bytes))
    except ApiError:
        await body.drain(max_bytes)
        raise


async def _read_capped(body: _Body, max_bytes: int, too_large: ApiError) -> bytes:
    declared = body.declared()
    if declared is not None and declared > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    while (chunk := await body.next_chunk()) is not None:
        if body.received > max_bytes:
            raise too_large
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
    """The body in whichever form its content type says; a refused one is drained first."""
    body = _Body(request)
    try:
        return await _read_request_body(body, limits)
    except ApiError:
        await body.drain(limits.max_body_bytes)
        raise


async def _read_request_body(body: _Body, limits: ImageLimits) -> RequestBody:
    content_type, options = parse_options_header(body.headers.get("content-type", ""))
    media_type = content_type.decode("latin-1").lower()
    if media_type == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError("invalid_request", "multipart body without a boundary")
        return await _read_multipart(body, boundary, limits)
    if media_type in RAW_IMAGE_TYPES:
        # One image, so the per-image cap refuses it as soon as it is passed.
        too_large = _image_too_large("body", limits.max_image_bytes)
        if limits.max_body_bytes <= limits.max_image_bytes:
            too_large = _body_too_large(limits.max_body_bytes)
        cap = min(limits.max_image_bytes, limits.max_body_bytes)
        data = await _read_capped(body, cap, too_large)
        return RequestBody(form="raw", size=len(data), files=[("file", data)])
    if media_type not in ("application/json", ""):
        raise ApiError(
            "unsupported_media_type",
            f"content type {media_type!r} is not accepted: send application/json, "
            "multipart/form-data or image/jpeg|png|webp|gif|bmp",
        )
    data = await _read_capped(body, limits.max_body_bytes, _body_too_large(limits.max_body_bytes))
    if not data:
        raise ApiError("invalid_request", "the request body is empty")
    return RequestBody(form="json", size=len(data), json=_json_object(data))


def _json_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object. Anything the parser refuses is the client's error, however it
    refuses: nesting deeper than Python's recursion limit, or an integer longer than Python's
    digit cap (4300), raise RecursionError and ValueError rather than a JSONDecodeError."""
    try:
        document = json.loads(data)
    except RecursionError as exc:
        raise ApiError("invalid_request", "malformed JSON: nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise ApiError("invalid_request", f"malformed JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ApiError("invalid_request", "malformed JSON: not UTF-8") from exc
    except ValueError as exc:
        raise ApiError("invalid_request", "malformed JSON: a number too long to read") from exc
    if not isinstance(document, dict):
        raise ApiError("invalid_request", "the JSON body must be an object")
    return document


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


async def _read_multipart(body: _Body, boundary: bytes, limits: ImageLimits) -> RequestBody:
    declared = body.declared()
    if declared is not None and declared > limits.max_body_bytes:
        raise _body_too_large(limits.max_body_bytes)
    collector = _MultipartCollector(limits)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    while (chunk := await body.next_chunk()) is not None:
        if body.received > limits.max_body_bytes:
            raise _body_too_large(limits.max_body_bytes)
        _parse(parser.write, chunk)
    _parse(parser.finalize)
    return RequestBody(
        form="multipart", size=body.received, fields=collector.fields, files=collector.files
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
    if not value:
        raise ApiError("invalid_request", f"{param} is empty", param=param)
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
