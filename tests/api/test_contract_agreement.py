"""The OpenAPI document and the server agree: a body form the document offers is taken, what the
document's schemas refuse the server refuses too, JSON integers are JSON integers, and the forms
where every value is text keep working."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from support.api import Api
from support.samples import photo_jpeg

RAW_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"}


async def openapi(api: Api) -> dict[str, Any]:
    return dict((await api.client.get("/openapi.json")).json())


def request_body(document: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(document["paths"][path]["post"]["requestBody"]["content"])


async def test_compare_and_duplicates_offer_no_raw_body_since_they_refuse_one(api: Api) -> None:
    document = await openapi(api)
    for path in ("/v1/embeddings", "/v1/analyze"):
        assert set(request_body(document, path)) == {
            "application/json",
            "multipart/form-data",
            *RAW_TYPES,
        }
    for path in ("/v1/compare", "/v1/duplicates"):
        assert set(request_body(document, path)) == {"application/json", "multipart/form-data"}
    compare_form = request_body(document, "/v1/compare")["multipart/form-data"]["schema"]
    assert set(compare_form["properties"]) == set(compare_form["required"]) == {"a", "b"}
    duplicates_form = request_body(document, "/v1/duplicates")["multipart/form-data"]["schema"]
    files = duplicates_form["properties"]["file"]
    assert (files["minItems"], files["maxItems"]) == (2, 64)

    # And a raw body is what they refuse.
    auth = {"Authorization": f"Bearer {api.new_key()}", "Content-Type": "image/jpeg"}
    for path in ("/v1/compare", "/v1/duplicates"):
        response = await api.client.post(path, content=photo_jpeg("coffee"), headers=auth)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request")


async def test_usage_start_and_end_are_declared_as_dates(api: Api) -> None:
    parameters = (await openapi(api))["paths"]["/v1/usage"]["get"]["parameters"]
    days = {parameter["name"]: parameter["schema"] for parameter in parameters}
    for name in ("start", "end"):
        assert {"type": "string", "format": "date"} in days[name]["anyOf"], days[name]


def json_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(request_body(document, path)["application/json"]["schema"]["properties"])


def form_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(request_body(document, path)["multipart/form-data"]["schema"]["properties"])


async def test_the_schema_refuses_what_the_server_refuses(api: Api) -> None:
    document = await openapi(api)
    analyze, embeddings = (
        json_schema(document, "/v1/analyze"),
        json_schema(document, "/v1/embeddings"),
    )
    features = {branch.get("type"): branch for branch in analyze["features"]["anyOf"]}
    assert features["array"]["minItems"] == 1
    pattern = features["string"]["pattern"]
    assert form_schema(document, "/v1/analyze")["features"]["pattern"] == pattern
    assert re.search(pattern, " labels,text ,, faces,")
    for refused in ("", " , ", "labels text", "labels,nope"):
        assert not re.search(pattern, refused), refused
    for schema in (embeddings, analyze, form_schema(document, "/v1/embeddings")):
        assert schema["encoding_format"]["enum"] == ["float", "base64"]
    for path in ("/v1/embeddings", "/v1/analyze"):
        single, listed = json_schema(document, path)["input"]["anyOf"]
        assert single["minLength"] == listed["items"]["minLength"] == listed["minItems"] == 1
    assert json_schema(document, "/v1/compare")["a"]["minLength"] == 1

    # Each value the schema refuses, the server refuses, in every form it can come in.
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    image = base64.b64encode(photo_jpeg("coffee")).decode()
    refused: list[tuple[str, dict[str, Any]]] = [
        ("/v1/analyze", {"json": {"input": image, "features": []}}),
        ("/v1/analyze", {"json": {"input": image, "features": ""}}),
        ("/v1/analyze", {"data": {"features": ""}, "files": {"file": b"x"}}),
        ("/v1/embeddings", {"json": {"input": image, "encoding_format": ""}}),
        ("/v1/embeddings", {"data": {"encoding_format": ""}, "files": {"file": b"x"}}),
        ("/v1/analyze?encoding_format=", {"files": {"file": b"x"}}),
        ("/v1/embeddings", {"json": {"input": ""}}),
        ("/v1/embeddings", {"json": {"input": [image, ""]}}),
        ("/v1/analyze", {"json": {"input": ""}}),
        ("/v1/duplicates", {"json": {"input": [image, ""]}}),
        ("/v1/compare", {"json": {"a": image, "b": ""}}),
    ]
    for path, request in refused:
        response = await api.client.post(path, headers=auth, **request)
        assert response.status_code == 400, (path, request, response.text)
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("field", "value"),
    [("dimensions", True), ("dimensions", "8"), ("dimensions", 8.0), ("dimensions", [8])],
)
async def test_a_json_integer_must_be_a_json_integer(api: Api, field: str, value: Any) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    image = base64.b64encode(photo_jpeg("coffee")).decode()
    response = await api.client.post(
        "/v1/embeddings", json={"input": image, field: value}, headers=auth
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field


async def test_analyze_integers_are_strict_in_json_and_text_in_forms(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    jpeg = photo_jpeg("coffee")
    for value in (True, "3", 3.0):
        response = await api.client.post(
            "/v1/analyze",
            json={"input": base64.b64encode(jpeg).decode(), "features": ["labels"], "top_k": value},
            headers=auth,
        )
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["param"] == "top_k"
    as_form = await api.client.post(
        "/v1/analyze",
        data={"features": "labels", "top_k": "3"},
        files={"file": ("a.jpg", jpeg)},
        headers=auth,
    )
    as_query = await api.client.post(
        "/v1/analyze?features=labels&top_k=3",
        content=jpeg,
        headers={**auth, "Content-Type": "image/jpeg"},
    )
    for response in (as_form, as_query):
        assert response.status_code == 200, response.text
        assert len(response.json()["results"][0]["labels"]) == 3


async def test_dimensions_as_text_in_a_form_or_query_still_works(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    jpeg = photo_jpeg("coffee")
    as_form = await api.client.post(
        "/v1/embeddings", data={"dimensions": "8"}, files={"file": ("a.jpg", jpeg)}, headers=auth
    )
    as_query = await api.client.post(
        "/v1/embeddings?dimensions=8", content=jpeg, headers={**auth, "Content-Type": "image/jpeg"}
    )
    as_json = await api.client.post(
        "/v1/embeddings",
        json={"input": base64.b64encode(jpeg).decode(), "dimensions": 8},
        headers=auth,
    )
    for response in (as_form, as_query, as_json):
        assert response.status_code == 200, response.text
        assert len(response.json()["data"][0]["embedding"]) == 8
