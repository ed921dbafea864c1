"""One account's usage from the request log, per UTC day and endpoint: `/v1/usage` and the portal
dashboard both read it here, so they never disagree.

Percentiles are computed in Python over the latencies of each group (linear interpolation between
closest ranks, as PostgreSQL's percentile_cont and numpy's default do), so SQLite and PostgreSQL
give the same answer. `LatencySummary`, `UsageRow` and `UsageTotals` are also `/v1/usage`'s
response schema: a change to their fields changes the public API.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.usage.models import RequestLog


@dataclass(frozen=True)
class LatencySummary:
    p50: float | None
    p95: float | None


# The requests of one UTC day to one endpoint. Not a docstring: pydantic would publish it as the
# schema's description, and /v1/usage's OpenAPI document has none.
@dataclass(frozen=True)
class UsageRow:
    date: date
    endpoint: str
    requests: int
    images: int
    cached_images: int
    errors: int
    latency_ms: LatencySummary


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    images: int
    cached_images: int
    errors: int


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (percentile_cont); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    value = ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
    return round(value, 2)


def usage_rows(session: Session, account_id: str, since: datetime, until: datetime) -> list[Any]:
    """The request-log rows `summarise` reads: one account's, created in [since, until)."""
    return list(
        session.execute(
            select(
                RequestLog.created_at,
                RequestLog.endpoint,
                RequestLog.status,
                RequestLog.latency_ms,
                RequestLog.images,
                RequestLog.cached_images,
            )
            .where(RequestLog.account_id == account_id)
            .where(RequestLog.created_at >= since, RequestLog.created_at < until)
        )
    )


def summarise(rows: Sequence[Any]) -> tuple[list[UsageRow], UsageTotals]:
    """Group (created_at, endpoint, status, latency_ms, images, cached_images) rows by UTC day
    and endpoint."""
    groups: dict[tuple[date, str], list[Any]] = defaultdict(list)
    for row in rows:
        groups[(row.created_at.astimezone(UTC).date(), row.endpoint)].append(row)
    data = []
    for (day, endpoint), members in sorted(groups.items()):
        latencies = [float(member.latency_ms) for member in members]
        data.append(
            UsageRow(
                date=day,
                endpoint=endpoint,
                requests=len(members),
                images=sum(member.images for member in members),
                cached_images=sum(member.cached_images for member in members),
                errors=sum(1 for member in members if member.status >= 400),
                latency_ms=LatencySummary(
                    p50=percentile(latencies, 0.50), p95=percentile(latencies, 0.95)
                ),
            )
        )
    totals = UsageTotals(
        requests=sum(group.requests for group in data),
        images=sum(group.images for group in data),
        cached_images=sum(group.cached_images for group in data),
        errors=sum(group.errors for group in data),
    )
    return data, totals
