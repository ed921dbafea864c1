"""OpenAPI covers every route and its errors; a bug answers a 500 that leaks nothing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from support.api import Api


async def test_openapi_documents_every_route_and_its_errors(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/v1/embeddings", "/v1/models", "/healthz", "/readyz"):
        assert path in paths
    embeddings = paths["/v1/embeddings"]["post"]
    content = embeddings["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/jpeg", "image/png"} <= set(content)
    documented = set(embeddings["responses"])
    assert {"200", "400", "401", "403", "404", "413", "415", "422", "500", "503"} <= documented
    descriptions = " ".join(
        response["description"] for response in embeddings["responses"].values()
    )
    for code in ("invalid_image", "image_decode_timeout", "too_many_images", "overloaded"):
        assert code in descriptions


async def test_the_api_reference_page_loads_nothing_from_another_site(api: Api) -> None:
    # The policy promises no third-party script: /docs is Swagger UI from our own files.
    page = await api.client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls = re.findall(r"""(?:url|openapi_url)\s*[:=]\s*["']([^"']+)["']""", page.text)
    assert sources and all(link.startswith("/") for link in sources + urls), sources + urls
    assert "http://" not in page.text and "https://" not in page.text
    for link in sources:
        assert (await api.client.get(link)).status_code == 200, link
    assert (await api.client.get("/redoc")).status_code == 404


async def test_an_unexpected_error_is_a_500_that_leaks_nothing(
    api_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    context = api_factory()

    async def broken() -> None:
        raise RuntimeError("secret internal detail: /etc/dupify/db password")

    context.app.add_api_route("/v1/broken", broken, methods=["GET"])
    async with context as api:
        with caplog.at_level(logging.ERROR, logger="dupify.request"):
            response = await api.client.get("/v1/broken")
        await api.flush_usage()
        with api.engine.connect() as connection:
            row = connection.execute(
                text("SELECT status, error_code, endpoint FROM request_logs")
            ).one()
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and error["type"] == "api_error"
    assert "secret" not in response.text and "RuntimeError" not in response.text
    request_id = response.headers["X-Request-Id"]
    assert error["request_id"] == request_id
    assert any(request_id in record.getMessage() for record in caplog.records)
    assert tuple(row) == (500, "internal_error", "GET /v1/broken")
