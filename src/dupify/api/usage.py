"""GET /v1/usage (API.md section 6): the caller's usage per day and endpoint, and the plan's quota.

Everything is computed from the request log, the same rows the portal shows and the monthly
quota counts. Percentiles are computed here, in Python, over the latencies of each group (linear
interpolation between closest ranks, as PostgreSQL's percentile_cont and numpy's default do),
so SQLite and PostgreSQL give the same answer.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.api.deps import get_runtime, require_scope
from dupify.api.schemas import error_responses
from dupify.context import RequestContext
from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.limits.ratelimit import month_of
from dupify.usage.models import RequestLog

router = APIRouter()
MAX_DAYS = 366


class LatencySummary(BaseModel):
    p50: float | None
    p95: float | None


class UsageRow(BaseModel):
    date: date
    endpoint: str
    requests: int
    images: int
    cached_images: int
    errors: int
    latency_ms: LatencySummary


class UsageTotals(BaseModel):
    requests: int
    images: int
    cached_images: int
    errors: int


class PlanUsage(BaseModel):
    name: str
    requests_per_minute: int
    images_per_month: int
    images_used: int
    images_left: int
    period_start: date
    period_end: date  # exclusive: the quota renews at 00:00 UTC on this day


class UsageReport(BaseModel):
    object: str = "usage"
    start: date
    end: date
    data: list[UsageRow]
    totals: UsageTotals
    plan: PlanUsage


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


def _parse_day(value: str | None, param: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(
            "invalid_request", f"{param}: expected a date as YYYY-MM-DD", param=param
        ) from exc


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
        requests=sum(row.requests for row in data),
        images=sum(row.images for row in data),
        cached_images=sum(row.cached_images for row in data),
        errors=sum(row.errors for row in data),
    )
    return data, totals


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    responses=error_responses(
        "missing_api_key",
        "invalid_api_key",
        "account_suspended",
        "insufficient_scope",
        "rate_limited",
        "invalid_request",
    ),
    summary="Usage per day and endpoint, and the plan's monthly quota",
    tags=["usage"],
)
async def get_usage(
    request: Request,
    start: str | None = None,
    end: str | None = None,
    ctx: RequestContext = Depends(require_scope("usage:read")),
) -> UsageReport:
    """`start` and `end` are UTC days, both included (default: this month so far)."""
    runtime = get_runtime(request)
    now = utcnow()
    month_start, month_end = month_of(now)
    first = _parse_day(start, "start", month_start.date())
    last = _parse_day(end, "end", now.date())
    if last < first:
        raise ApiError("invalid_request", "end: must not be before start", param="end")
    if (last - first).days >= MAX_DAYS:
        raise ApiError("invalid_request", f"end: at most {MAX_DAYS} days per request", param="end")
    # This process's buffered rows are written first, so the report includes them.
    await runtime.recorder.flush()
    since = datetime.combine(first, time.min, tzinfo=UTC)
    # Nothing is logged after today, and the day after 9999-12-31 does not exist (an error).
    until = datetime.combine(min(last, now.date()) + timedelta(days=1), time.min, tzinfo=UTC)

    def load() -> list[Any]:
        with runtime.sessions() as session:
            return usage_rows(session, ctx.caller, since, until)

    rows = await asyncio.to_thread(load)
    data, totals = await asyncio.to_thread(summarise, rows)
    plan = runtime.settings.plan(ctx.plan)
    used = await runtime.meter.images_used_this_month(ctx.caller, now)
    return UsageReport(
        start=first,
        end=last,
        data=data,
        totals=totals,
        plan=PlanUsage(
            name=ctx.plan,
            requests_per_minute=plan.requests_per_minute,
            images_per_month=plan.images_per_month,
            images_used=used,
            images_left=max(0, plan.images_per_month - used),
            period_start=month_start.date(),
            period_end=month_end.date(),
        ),
    )
