"""Odd requests to every image route get a 4xx (or analyze's per-image error) in the
envelope, never a 500."""

from __future__ import annotations

import pytest

from support.api import Api
from support.samples import photo_jpeg

ROUTES = ("/v1/embeddings", "/v1/analyze", "/v1/compare", "/v1/duplicates")

# (description, request keyword arguments for httpx)
ODD_REQUESTS = [
    ("empty JSON object", {"json": {}}),
    ("JSON array", {"json": ["aGk="]}),
    ("JSON null", {"content": b"null", "headers": {"Content-Type": "application/json"}}),
    ("JSON string", {"json": "aGk="}),
    ("input is a number", {"json": {"input": 7, "a": 7, "b": 7}}),
    ("input list of numbers", {"json": {"input": [1, 2], "a": [1], "b": {}}}),
    ("broken JSON", {"content": b"{", "headers": {"Content-Type": "application/json"}}),
    ("not UTF-8 JSON", {"content": b"\xff\xfe{}", "headers": {"Content-Type": "application/json"}}),
    ("data URI without data", {"json": {"input": "data:image/png;base64,", "a": "", "b": ""}}),
    ("multipart without files", {"data": {"features": "labels"}, "files": {"other": b"x"}}),
    ("text/plain body", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}),
    ("no content type", {"content": b"\x00\x01"}),
    ("raw empty image", {"content": b"", "headers": {"Content-Type": "image/png"}}),
    ("raw SVG", {"content": b"<svg/>", "headers": {"Content-Type": "image/jpeg"}}),
    ("features of the wrong type", {"json": {"input": "aGk=", "features": {"labels": 1}}}),
    ("huge top_k", {"json": {"input": "aGk=", "top_k": 10**30}}),
]


@pytest.mark.parametrize("route", ROUTES)
async def test_odd_requests_get_a_documented_4xx(api: Api, route: str) -> None:
    key = api.new_key()
    for description, request in ODD_REQUESTS:
        headers = {"Authorization": f"Bearer {key}", **request.get("headers", {})}
        arguments = {name: value for name, value in request.items() if name != "headers"}
        response = await api.client.post(route, headers=headers, **arguments)
        if route == "/v1/analyze" and response.status_code == 200:
            # A batch answers 200 with each bad image's own error (API section 4).
            errors = [result["error"] for result in response.json()["results"]]
        else:
            assert 400 <= response.status_code < 500, (description, response.text)
            errors = [response.json()["error"]]
        for error in errors:
            assert error["code"] and error["message"] and error["request_id"], description


async def test_a_good_request_after_the_odd_ones_still_works(api: Api) -> None:
    key = api.new_key()
    response = await api.client.post(
        "/v1/analyze?features=hashes",
        content=photo_jpeg("coffee"),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("content_type", "start"),
    [
        ("application/json", b'{"input": "aGk'),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\nab',
        ),
    ],
)
async def test_a_client_that_leaves_mid_body_is_a_400(
    api: Api, content_type: str, start: bytes
) -> None:
    """Bodies are read below the HTTP layer; the HTTP layer answers for a client gone."""
    messages = iter(
        [
            {"type": "http.request", "body": start, "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {api.new_key()}".encode()),
        (b"content-type", content_type.encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("dupify.test", 80),
        "state": {},
    }
    await api.app(scope, receive, send)
    assert sent[0]["status"] == 400
    body = b"".join(part.get("body", b"") for part in sent[1:])  # type: ignore[misc]
    assert b'"invalid_request"' in body and b"closed the connection" in body
