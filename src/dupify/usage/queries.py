"""One account's usage from the request log, per UTC day and endpoint: `/v1/usage` and the portal
dashboard both read it here, so they never disagree.

Percentiles are computed in Python over the latencies of each group (linear interpolation between
closest ranks, as PostgreSQL's percentile_cont and numpy's default do), so SQLite and PostgreSQL
give the same answer. `LatencySummary`, `UsageRow` and `UsageTotals` are also `/v1/usage`'s
response schema: a change to their fields changes the public API. The portal's request-log page
and its CSV download filter the same rows here (`LogFilter`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
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
    """The request-log rows `summarise` reads (and the dashboard's per-key breakdown, by key_id):
    one account's, created in [since, until)."""
    return list(
        session.execute(
            select(
                RequestLog.created_at,
                RequestLog.endpoint,
                RequestLog.status,
                RequestLog.latency_ms,
                RequestLog.images,
                RequestLog.cached_images,
                RequestLog.key_id,
                RequestLog.model,
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


# -- the request-log page ---------------------------------------------------------------------

LOG_PAGE_SIZE = 50
EXPORT_MAX_ROWS = 100_000  # a CSV download's cap (90 days of logs rarely come near it)
STATUS_FILTERS = {
    "all": "all",
    "2xx": "successful (2xx)",
    "4xx": "client errors (4xx)",
    "5xx": "server errors (5xx)",
    "errors": "all errors (4xx and 5xx)",
}
# The key filter's value for requests made while signed in to the portal (the playground).
NO_KEY = "none"


@dataclass(frozen=True)
class LogFilter:
    status: str = "all"
    endpoint: str = ""
    key: str = ""  # a key id, NO_KEY, or "" for all
    start: date | None = None
    end: date | None = None
    page: int = 1


def _log_conditions(account_id: str, chosen: LogFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [RequestLog.account_id == account_id]
    if chosen.status == "2xx":
        conditions.append(RequestLog.status < 300)
    elif chosen.status == "4xx":
        conditions += [RequestLog.status >= 400, RequestLog.status < 500]
    elif chosen.status == "5xx":
        conditions.append(RequestLog.status >= 500)
    elif chosen.status == "errors":
        conditions.append(RequestLog.status >= 400)
    if chosen.endpoint:
        conditions.append(RequestLog.endpoint == chosen.endpoint)
    if chosen.key == NO_KEY:
        conditions.append(RequestLog.key_id.is_(None))
    elif chosen.key:
        conditions.append(RequestLog.key_id == chosen.key)
    if chosen.start is not None:
        conditions.append(
            RequestLog.created_at >= datetime.combine(chosen.start, time.min, tzinfo=UTC)
        )
    if chosen.end is not None and chosen.end < date.max:  # no day after date.max to stop at
        after = datetime.combine(chosen.end + timedelta(days=1), time.min, tzinfo=UTC)
        conditions.append(RequestLog.created_at < after)
    return conditions


def log_page(session: Session, account_id: str, chosen: LogFilter) -> tuple[list[RequestLog], int]:
    """One page of the account's log, newest first, and the number of matching rows."""
    conditions = _log_conditions(account_id, chosen)
    total = int(
        session.scalar(select(func.count()).select_from(RequestLog).where(*conditions)) or 0
    )
    rows = session.scalars(
        select(RequestLog)
        .where(*conditions)
        .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        .offset((chosen.page - 1) * LOG_PAGE_SIZE)
        .limit(LOG_PAGE_SIZE)
    )
    return list(rows), total


def log_rows(session: Session, account_id: str, chosen: LogFilter) -> list[RequestLog]:
    """Every row the filter matches (the page number aside), newest first, up to the cap."""
    return list(
        session.scalars(
            select(RequestLog)
            .where(*_log_conditions(account_id, chosen))
            .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            .limit(EXPORT_MAX_ROWS)
        )
    )


def account_endpoints(session: Session, account_id: str) -> list[str]:
    query = select(RequestLog.endpoint).where(RequestLog.account_id == account_id).distinct()
    return sorted(session.scalars(query))


def latest_errors(session: Session, account_id: str, limit: int = 10) -> list[RequestLog]:
    query = (
        select(RequestLog)
        .where(RequestLog.account_id == account_id, RequestLog.status >= 400)
        .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
