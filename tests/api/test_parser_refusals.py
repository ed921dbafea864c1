"""What a parser refuses in an unexpected way is still the client's error: JSON nested past
Python's recursion limit (RecursionError) or holding an integer past its digit cap (ValueError),
anywhere in the body, and form or query values of that kind, are a 400 `invalid_request` in the
envelope on every image route and on /v1/usage, never a 500."""

from __future__ import annotations

import pytest

from support.api import Api

ROUTES = ("/v1/embeddings", "/v1/analyze", "/v1/compare", "/v1/duplicates")
DEEP = 100_000
LONG_INTEGER = b"9" * 5_000  # Python's int() refuses more than 4,300 digits


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# (description, raw JSON body); the images and options are otherwise well formed.
HOSTILE_JSON = [
    ("input nested 100,000 deep", b'{"input": ' + nested(DEEP) + b"}"),
    ("dimensions nested 100,000 deep", b'{"input": "aGk=", "dimensions": ' + nested(DEEP) + b"}"),
    ("unknown field nested 100,000 deep", b'{"input": "aGk=", "x": ' + nested(DEEP) + b"}"),
    ("input a 5,000-digit integer", b'{"input": ' + LONG_INTEGER + b"}"),
    ("dimensions a 5,000-digit integer", b'{"input": "aGk=", "dimensions": ' + LONG_INTEGER + b"}"),
    ("unknown field a 5,000-digit integer", b'{"input": "aGk=", "x": [' + LONG_INTEGER + b"]}"),
]


def assert_invalid_request(status: int, body: dict[str, dict[str, str]], what: str) -> None:
    assert status == 400, (what, body)
    assert body["error"]["code"] == "invalid_request", what
    assert body["error"]["request_id"], what


@pytest.mark.parametrize("route", ROUTES)
async def test_json_the_parser_cannot_take_is_a_400_on_every_image_route(
    api: Api, route: str
) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}", "Content-Type": "application/json"}
    for description, body in HOSTILE_JSON:
        response = await api.client.post(route, content=body, headers=auth)
        assert_invalid_request(response.status_code, response.json(), description)


@pytest.mark.parametrize(
    ("route", "fields"),
    [
        ("/v1/embeddings", ("dimensions", "encoding_format")),
        ("/v1/analyze", ("top_k", "max_colors", "features", "encoding_format")),
    ],
)
async def test_form_values_the_parser_cannot_take_are_a_400(
    api: Api, route: str, fields: tuple[str, ...]
) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    for field in fields:
        for value in (LONG_INTEGER.decode(), nested(1000).decode()):
            response = await api.client.post(
                route, data={field: value}, files={"file": ("a.png", b"x")}, headers=auth
            )
            assert_invalid_request(response.status_code, response.json(), f"{field}={value[:9]}")


async def test_usage_query_values_the_parser_cannot_take_are_a_400(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.new_key()}"}
    for value in (LONG_INTEGER.decode(), nested(1000).decode(), "2026-02-30", "20260101", ""):
        for param in ("start", "end"):
            response = await api.client.get("/v1/usage", params={param: value}, headers=auth)
            assert_invalid_request(response.status_code, response.json(), f"{param}={value[:9]}")
            assert response.json()["error"]["param"] == param
