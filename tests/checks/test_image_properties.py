"""Property test of the four image routes: arbitrary bytes (a raw image body, multipart image
parts, base64 JSON input, or the whole body under each accepted content type), real images with
random damage, and arbitrary JSON documents get a status the route documents, never a 5xx.
Hypothesis's JSON values stay shallow and short, so deeply nested documents and numbers with
thousands of digits are drawn on purpose."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.api import Api
from support.contract import (
    documented_media_types,
    documented_statuses,
    image_routes,
    openapi_document,
)
from support.seeds import image_seeds

DOCUMENT = openapi_document()
ROUTES = image_routes(DOCUMENT)
RAW_TYPES = sorted(
    {
        media_type
        for route in ROUTES
        for media_type in documented_media_types(DOCUMENT, "POST", route)
        if media_type.startswith("image/")
    }
)
BODY_TYPES = [*RAW_TYPES, "application/json", "multipart/form-data; boundary=fuzz", "", "text/x"]
# The names the routes read, so that drawn documents reach their validation, not only its start.
KNOWN_FIELDS = ("input", "a", "b", "model", "features", "encoding_format", "dimensions", "top_k")
EXAMPLES_PER_ROUTE = 300


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SEEDS = st.sampled_from(sorted(image_seeds())).map(lambda name: image_seeds()[name])


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes overwritten, then maybe cut short: it passes the format
    sniffing, so the damage reaches the decoder."""
    data = bytearray(draw(SEEDS))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


# Arbitrary bytes, damaged images, and intact ones (so that some requests go all the way).
IMAGE_BYTES = st.one_of(st.binary(max_size=4096), damaged_images(), SEEDS)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=32)
    | IMAGE_BYTES.map(b64),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_FIELDS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)


def nested(depth: int, inside: str) -> str:
    return "[" * depth + inside + "]" * depth


JSON_TEXTS = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.integers(1, 3000).map(lambda depth: nested(depth, "")),
    st.integers(1, 3000).map(lambda depth: '{"input": ' + nested(depth, '"x"') + "}"),
    st.integers(1, 6000).map(lambda digits: '{"input": "aGk=", "top_k": ' + "7" * digits + "}"),
)


@st.composite
def image_requests(draw: st.DrawFn, route: str) -> dict[str, Any]:
    """httpx arguments for one request to `route`, in one of the forms."""
    form = draw(st.sampled_from(["raw", "multipart", "base64", "body", "json"]))
    two = [draw(IMAGE_BYTES), draw(IMAGE_BYTES)]
    if form == "raw":
        return {"content": two[0], "headers": {"Content-Type": draw(st.sampled_from(RAW_TYPES))}}
    if form == "multipart":
        names = ["a", "b"] if route == "/v1/compare" else ["file"] * draw(st.integers(1, 2))
        files = [
            (name, (f"f{i}", data, "image/png"))
            for i, (name, data) in enumerate(zip(names, two[: len(names)], strict=True))
        ]
        return {"files": files}
    if form == "base64":
        document: dict[str, Any] = (
            {"a": b64(two[0]), "b": b64(two[1])}
            if route == "/v1/compare"
            else {"input": [b64(data) for data in two[: draw(st.integers(1, 2))]]}
        )
        return {"json": document}
    if form == "body":
        content_type = draw(st.sampled_from(BODY_TYPES))
        return {
            "content": draw(st.binary(max_size=2048)),
            "headers": {"Content-Type": content_type},
        }
    return {
        "content": draw(JSON_TEXTS).encode(),
        "headers": {"Content-Type": "application/json"},
    }


async def post(api: Api, key: str, route: str, request: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **request.get("headers", {})}
    arguments = {name: value for name, value in request.items() if name != "headers"}
    return await api.client.post(route, headers=headers, timeout=60, **arguments)


# One database: what is checked is how a body is read and decoded, which no database changes.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("route", ROUTES)
@settings(
    max_examples=EXAMPLES_PER_ROUTE,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app and key for all examples is intended
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_any_body_gets_a_documented_status_and_never_a_5xx(
    unlimited: tuple[Api, str], route: str, data: st.DataObject
) -> None:
    api, key = unlimited
    request = data.draw(image_requests(route), label="request")
    response = await post(api, key, route, request)
    assert response.status_code < 500, response.text
    assert response.status_code in documented_statuses(DOCUMENT, "POST", route), response.text
