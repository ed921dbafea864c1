"""PRIVACY.md row 2: exactly one request-log row per API response, with the documented fields."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

from sqlalchemy import inspect, select

from dupify.db import create_db_engine
from dupify.usage.models import RequestLog
from support.samples import photo_jpeg

LOG_COLUMNS = {
    "id",
    "request_id",
    "created_at",
    "account_id",
    "key_id",
    "endpoint",
    "status",
    "error_code",
    "latency_ms",
    "images",
    "cached_images",
    "bytes_in",
    "model",
}


async def test_a_burst_then_a_graceful_stop_logs_one_row_per_response(
    api_factory: Callable[..., Any],
) -> None:
    image = base64.b64encode(photo_jpeg("chelsea", size=(96, 96))).decode()
    responses = []
    async with api_factory() as api:
        key = api.new_key()
        auth = {"Authorization": f"Bearer {key}"}
        requests: list[dict[str, Any]] = [
            {"method": "POST", "url": "/v1/embeddings", "json": {"input": image}, "headers": auth},
            {
                "method": "POST",
                "url": "/v1/embeddings",
                "json": {"input": [image, image]},
                "headers": auth,
            },
            {"method": "POST", "url": "/v1/embeddings", "json": {"input": image}},
            {"method": "POST", "url": "/v1/embeddings", "content": b"{", "headers": auth},
            {"method": "POST", "url": "/v1/embeddings", "json": {"input": "AAAA"}, "headers": auth},
            {"method": "GET", "url": "/v1/models", "headers": auth},
            {"method": "GET", "url": "/v1/no-such-route", "headers": auth},
            {"method": "GET", "url": "/v1/embeddings", "headers": auth},
        ]
        burst = [random.Random(7).choice(requests) for _ in range(40)] + requests
        for request in burst:
            responses.append(await api.client.request(**request))
        engine_url = api.settings.database_url
    # The app has stopped: whatever was buffered must have been flushed on the way out.
    engine = create_db_engine(engine_url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("request_logs")}
        assert columns == LOG_COLUMNS
        with engine.connect() as connection:
            rows = connection.execute(select(RequestLog.__table__)).mappings().all()
    finally:
        engine.dispose()
    by_request = {row["request_id"]: row for row in rows}
    assert len(rows) == len(responses) == len(by_request)
    for response in responses:
        row = by_request[response.headers["X-Request-Id"]]
        assert row["status"] == response.status_code
        code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
        assert row["error_code"] == code
        assert row["latency_ms"] >= 0
        method = response.request.method
        if response.request.url.path == "/v1/no-such-route":
            assert row["endpoint"] == f"{method} (no route)"
        else:
            assert row["endpoint"] == f"{method} {response.request.url.path}"
        # Which model answered: the embeddings' model; none for a route that runs no model.
        answered = response.json().get("model") if response.status_code == 200 else None
        if response.request.url.path == "/v1/models" or answered:
            assert row["model"] == answered
        if response.status_code == 200 and response.request.url.path == "/v1/embeddings":
            assert row["images"] == len(response.json()["data"])
            assert row["bytes_in"] == len(response.request.content)
            assert row["key_id"] and row["account_id"]
        if response.status_code == 401:
            assert row["key_id"] is None and row["account_id"] is None
        if response.status_code == 200 and response.request.url.path == "/v1/embeddings":
            assert row["cached_images"] == response.json()["usage"]["cached_images"]
        else:
            assert row["cached_images"] == 0
