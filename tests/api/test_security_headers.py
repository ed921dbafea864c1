"""Every answer that is not a portal page carries the API's security headers: JSON of every kind
(success, error, the framework's 404, the last-resort 500), the OpenAPI document, and /docs with
its files, which get a policy that lets Swagger UI load this origin's files only. HSTS over TLS,
as the portal sends it; portal pages keep the portal's own headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from dupify.portal.headers import CONTENT_SECURITY_POLICY as PORTAL_POLICY
from dupify.server.headers import API_CONTENT_SECURITY_POLICY, DOCS_CONTENT_SECURITY_POLICY


def assert_api_headers(response: httpx.Response, policy: str) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert response.headers.get("content-security-policy") == policy, where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("referrer-policy") == "no-referrer", where


async def test_api_json_openapi_and_docs_carry_security_headers(
    api_factory: Callable[..., Any],
) -> None:
    context = api_factory()

    async def broken() -> None:
        raise RuntimeError("a bug")

    context.app.add_api_route("/v1/broken", broken, methods=["GET"])
    async with context as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        client = api.client
        json_answers = [
            await client.get("/v1/models", headers=auth),
            await client.get("/v1/usage", headers=auth),
            await client.post("/v1/embeddings", json={"input": "aGk="}),  # 401
            await client.post("/v1/embeddings", content=b"{", headers=auth),  # 400
            await client.get("/v1/nowhere", headers=auth),  # the framework's 404
            await client.get("/v1/broken", headers=auth),  # the last-resort 500
            await client.get("/openapi.json"),
            await client.get("/healthz"),
        ]
        assert [response.status_code for response in json_answers] == [
            200, 200, 401, 400, 404, 500, 200, 200,
        ]  # fmt: skip
        for response in json_answers:
            assert_api_headers(response, API_CONTENT_SECURITY_POLICY)
            assert "strict-transport-security" not in response.headers  # plain HTTP here
        for path in ("/docs", "/docs/start.js", "/docs/assets/swagger-ui-bundle.js"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert_api_headers(response, DOCS_CONTENT_SECURITY_POLICY)


async def test_hsts_over_tls_and_portal_pages_keep_their_own(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(portal={"trust_forwarded_proto": True}) as api:
        behind_tls = {"X-Forwarded-Proto": "https"}
        for path in ("/healthz", "/openapi.json", "/docs", "/v1/models"):
            response = await api.client.get(path, headers=behind_tls)
            assert response.headers["strict-transport-security"].startswith("max-age=63072000")
        page = await api.client.get("/login", headers=behind_tls)
        assert page.headers["content-security-policy"] == PORTAL_POLICY
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["strict-transport-security"].startswith("max-age=63072000")
        assert page.headers.get_list("content-security-policy") == [PORTAL_POLICY]
