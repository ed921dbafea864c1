"""GET /v1/usage (API section 6): per day and endpoint, from the request log, the same figures on
SQLite and PostgreSQL, only the caller's account, behind the `usage:read` scope."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from dupify.accounts.models import Account
from dupify.db import session_factory, transaction
from dupify.usage.models import RequestLog
from dupify.usage.queries import percentile


def log_row(account_id: str, when: datetime, endpoint: str, **fields: Any) -> RequestLog:
    values: dict[str, Any] = {
        "request_id": "req_seeded",
        "created_at": when,
        "account_id": account_id,
        "key_id": None,
        "endpoint": endpoint,
        "status": 200,
        "error_code": None,
        "latency_ms": 10.0,
        "images": 0,
        "cached_images": 0,
        "bytes_in": 0,
    }
    values.update(fields)
    return RequestLog(**values)


def account_id_of(engine: Any, email: str) -> str:
    with transaction(session_factory(engine)) as session:
        found = session.scalar(select(Account.id).where(Account.email == email))
    assert found is not None
    return found


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_percentile_matches_linear_interpolation(fraction: float) -> None:
    values = [3.0, 1.0, 40.0, 7.5, 2.25, 19.0, 11.0]
    assert percentile(values, fraction) == round(float(np.percentile(values, fraction * 100)), 2)
    assert percentile([], fraction) is None
    assert percentile([5.0], fraction) == 5.0


async def test_usage_per_day_and_endpoint_with_latency_percentiles(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory() as api:
        key = api.new_key(email="reader@example.com")
        api.new_key(email="stranger@example.com")
        mine = account_id_of(api.engine, "reader@example.com")
        theirs = account_id_of(api.engine, "stranger@example.com")
        day_one = datetime(2026, 3, 9, 23, 59, 30, tzinfo=UTC)
        day_two = day_one + timedelta(minutes=1)  # just past midnight UTC: the next day
        embed_latencies = [12.0, 30.5, 8.25, 100.0, 41.0, 17.0]
        rows = [
            log_row(mine, day_one, "POST /v1/embeddings", latency_ms=latency, images=2)
            for latency in embed_latencies
        ]
        rows += [
            log_row(mine, day_one, "POST /v1/embeddings", status=422, error_code="invalid_image"),
            log_row(mine, day_one, "GET /v1/models", latency_ms=3.0),
            log_row(mine, day_two, "POST /v1/embeddings", images=3, cached_images=2),
            log_row(theirs, day_one, "POST /v1/embeddings", images=99),
            log_row(mine, day_two + timedelta(days=1), "GET /v1/models"),  # after `end`
        ]
        with transaction(session_factory(api.engine)) as session:
            session.add_all(rows)
        response = await api.client.get(
            "/v1/usage",
            params={"start": "2026-03-09", "end": "2026-03-10"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["object"], body["start"], body["end"]) == ("usage", "2026-03-09", "2026-03-10")
        data = body["data"]
        assert [(row["date"], row["endpoint"]) for row in data] == [
            ("2026-03-09", "GET /v1/models"),
            ("2026-03-09", "POST /v1/embeddings"),
            ("2026-03-10", "POST /v1/embeddings"),
        ]
        embeddings = data[1]
        all_latencies = [*embed_latencies, 10.0]
        assert (embeddings["requests"], embeddings["images"], embeddings["errors"]) == (7, 12, 1)
        assert embeddings["latency_ms"] == {
            "p50": round(float(np.percentile(all_latencies, 50)), 2),
            "p95": round(float(np.percentile(all_latencies, 95)), 2),
        }
        assert (data[2]["images"], data[2]["cached_images"]) == (3, 2)
        assert body["totals"] == {"requests": 9, "images": 15, "cached_images": 2, "errors": 1}
        plan = body["plan"]
        assert plan["name"] == "free" and plan["images_per_month"] == 1000
        assert plan["images_used"] + plan["images_left"] == 1000


async def test_usage_needs_its_scope_and_valid_dates(api_factory: Callable[..., Any]) -> None:
    async with api_factory() as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        narrow = {"Authorization": f"Bearer {api.new_key(scopes=['embeddings'])}"}
        refused = await api.client.get("/v1/usage", headers=narrow)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        for params, param in (
            ({"start": "2026-13-01"}, "start"),
            ({"start": "2026-03-10", "end": "2026-03-09"}, "end"),
            ({"start": "2020-01-01", "end": "2026-01-01"}, "end"),
        ):
            bad = await api.client.get("/v1/usage", params=params, headers=auth)
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"]["code"] == "invalid_request"
            assert bad.json()["error"]["param"] == param
        default = await api.client.get("/v1/usage", headers=auth)
        assert default.status_code == 200
        today = datetime.now(UTC).date()
        assert default.json()["start"] == today.replace(day=1).isoformat()
        assert default.json()["end"] == today.isoformat()


async def test_usage_for_days_up_to_the_last_representable_one(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory() as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        params = {"start": "9999-12-30", "end": "9999-12-31"}
        response = await api.client.get("/v1/usage", params=params, headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["start"], body["end"], body["data"]) == ("9999-12-30", "9999-12-31", [])
        assert body["totals"]["requests"] == 0
