"""Schemathesis against the app's own /openapi.json, with a real key: for every operation a
bounded number of generated requests, valid and invalid by the schema, get no 5xx, only
documented statuses and content types, bodies that match their documented schemas, and a 2xx
for valid data where the schema says exactly what the server takes; and every image route
accepts real images in every body form it documents."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from support.api import Api
from support.contract import (
    documented_media_types,
    image_routes,
    openapi_document,
    operations,
)
from support.seeds import photos

DOCUMENT = openapi_document()
# Where the schema is exact, data valid by it must get a 2xx. Elsewhere it cannot be: an image is
# an opaque string to the schema (any base64 is valid by it, few are images), and /v1/usage's
# days must be in order and at most 366 apart; there a 4xx to schema-valid data is no finding.
EXACT = {("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/readyz")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx"]}}}
)
EXAMPLES_PER_OPERATION = 150


@dataclass
class Target:
    """A running app, a key on it, the schema it serves (as served and as loaded by
    schemathesis), and a strategy per operation (built once)."""

    api: Api
    key: str
    document: dict[str, Any]
    schema: Any
    strategies: dict[tuple[str, str], st.SearchStrategy[Any]] = field(default_factory=dict)

    def cases(self, method: str, path: str) -> st.SearchStrategy[Any]:
        if (method, path) not in self.strategies:
            operation = self.schema[path][method]
            modes = [GenerationMode.POSITIVE]
            # Schema-invalid data needs something to break: a parameter or a body.
            definition = self.document["paths"][path][method.lower()]
            if definition.get("parameters") or definition.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            self.strategies[(method, path)] = st.one_of(
                [operation.as_strategy(generation_mode=mode) for mode in modes]
            )
        return self.strategies[(method, path)]

    async def send(self, case: Any) -> httpx.Response:
        """The case as schemathesis would send it (requests' encoding, multipart included), over
        the test's ASGI client: the app runs on the test's event loop, beside the shared models."""
        arguments = case.as_transport_kwargs(
            base_url=str(self.api.client.base_url),
            headers={"Authorization": f"Bearer {self.key}"},
        )
        prepared = requests.Request(**arguments).prepare()
        assert prepared.method is not None and prepared.url is not None
        return await self.api.client.request(
            prepared.method,
            prepared.url,
            headers=dict(prepared.headers),
            content=prepared.body,
            timeout=60,
        )


@pytest.fixture
async def target(unlimited: tuple[Api, str]) -> Target:
    api, key = unlimited
    served = (await api.client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(served, config=CONFIG)
    return Target(api, key, served, schema)


async def test_every_served_operation_is_checked(target: Target) -> None:
    assert operations(target.document) == operations(DOCUMENT)
    assert len(operations(DOCUMENT)) >= 8
    assert set(image_routes(DOCUMENT)) == {
        "/v1/embeddings",
        "/v1/analyze",
        "/v1/compare",
        "/v1/duplicates",
    }


@pytest.mark.parametrize(
    ("method", "path"), operations(DOCUMENT), ids=[f"{m} {p}" for m, p in operations(DOCUMENT)]
)
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app and key for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_generated_requests_keep_the_contract(
    target: Target, method: str, path: str, data: st.DataObject
) -> None:
    case = data.draw(target.cases(method, path), label="case")
    response = await target.send(case)
    checks = [*CHECKS, positive_data_acceptance] if (method, path) in EXACT else CHECKS
    case.validate_response(response, checks=checks)


def _json_body(schema: dict[str, Any], images: Sequence[bytes]) -> dict[str, Any]:
    """Every required property filled with images: a list of two where the schema allows an
    array (every route takes two), else one, a different one for each property."""
    as_text = [base64.b64encode(image).decode() for image in images]
    body: dict[str, Any] = {}
    for index, name in enumerate(schema.get("required", [])):
        options = schema["properties"][name].get("anyOf", [schema["properties"][name]])
        takes_list = any(option.get("type") == "array" for option in options)
        body[name] = as_text[:2] if takes_list else as_text[index % len(as_text)]
    return body


def _multipart_files(schema: dict[str, Any], images: Sequence[bytes]) -> list[tuple[str, Any]]:
    """A part for each binary property (a different image each), two for an array of them."""
    files: list[tuple[str, Any]] = []
    for index, (name, spec) in enumerate(schema["properties"].items()):
        if spec.get("format") == "binary":
            chosen = [images[index % len(images)]]
        elif spec.get("items", {}).get("format") == "binary":
            chosen = list(images[:2])
        else:
            continue
        files.extend(
            (name, (f"{name}{n}.png", image, "image/png")) for n, image in enumerate(chosen)
        )
    return files


def documented_request(path: str, media_type: str) -> dict[str, Any]:
    """httpx arguments for a request in the documented `media_type` form, with real images."""
    schema = DOCUMENT["paths"][path]["post"]["requestBody"]["content"][media_type].get("schema")
    if media_type == "application/json":
        return {"json": _json_body(schema, photos("PNG", 3))}
    if media_type == "multipart/form-data":
        return {"files": _multipart_files(schema, photos("PNG", 3))}
    fmt = media_type.removeprefix("image/").upper()
    return {"content": photos(fmt)[0], "headers": {"Content-Type": media_type}}


DOCUMENTED_FORMS = [
    (path, media_type)
    for path in image_routes(DOCUMENT)
    for media_type in documented_media_types(DOCUMENT, "POST", path)
]


@pytest.mark.parametrize(
    ("path", "media_type"), DOCUMENTED_FORMS, ids=[f"{p} {m}" for p, m in DOCUMENTED_FORMS]
)
async def test_every_documented_body_form_is_accepted(
    target: Target, path: str, media_type: str
) -> None:
    request = documented_request(path, media_type)
    headers = {"Authorization": f"Bearer {target.key}", **request.pop("headers", {})}
    response = await target.api.client.post(path, headers=headers, timeout=60, **request)
    assert response.status_code == 200, f"{media_type} to {path}: {response.text}"
