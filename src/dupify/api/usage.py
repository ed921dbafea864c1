"""GET /v1/usage (API.md section 6): the caller's usage per day and endpoint, and the plan's quota.

Everything is computed from the request log (`dupify.usage.queries`, whose row and totals types
are this answer's), the same rows the portal shows and the monthly quota counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator
from pydantic_core import PydanticCustomError

from dupify.api.deps import RequestSession, get_runtime, require_scope
from dupify.api.schemas import error_responses
from dupify.context import RequestContext
from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.limits.ratelimit import month_of
from dupify.usage.queries import UsageRow, UsageTotals, summarise, usage_rows

router = APIRouter()
MAX_DAYS = 366


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


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _utc_day(value: object) -> object:
    """A query value as a date: exactly YYYY-MM-DD (OpenAPI's `format: date`), not the other
    forms `date.fromisoformat` takes (20240101, 2024-W01-1)."""
    if not isinstance(value, str):
        return value
    if _DAY.fullmatch(value):
        with contextlib.suppress(ValueError):  # a day that does not exist, like 2026-02-30
            return date.fromisoformat(value)
    raise PydanticCustomError("date", "expected a date as YYYY-MM-DD")


UtcDay = Annotated[
    date | None, BeforeValidator(_utc_day), Query(description="A UTC day, YYYY-MM-DD.")
]


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
    db: RequestSession,
    start: UtcDay = None,
    end: UtcDay = None,
    ctx: RequestContext = Depends(require_scope("usage:read")),
) -> UsageReport:
    """`start` and `end` are UTC days, both included (default: this month so far)."""
    runtime = get_runtime(request)
    now = utcnow()
    month_start, month_end = month_of(now)
    first = start or month_start.date()
    last = end or now.date()
    if last < first:
        raise ApiError("invalid_request", "end: must not be before start", param="end")
    if (last - first).days >= MAX_DAYS:
        raise ApiError("invalid_request", f"end: at most {MAX_DAYS} days per request", param="end")
    # This process's buffered rows are written first, so the report includes them.
    await runtime.recorder.flush()
    since = datetime.combine(first, time.min, tzinfo=UTC)
    # Nothing is logged after today, and the day after 9999-12-31 does not exist (an error).
    until = datetime.combine(min(last, now.date()) + timedelta(days=1), time.min, tzinfo=UTC)

    rows = await asyncio.to_thread(usage_rows, db, ctx.caller, since, until)
    groups, totals = await asyncio.to_thread(summarise, rows)
    plan = runtime.settings.plan(ctx.plan)
    used = await runtime.meter.images_used_this_month(ctx.caller, now)
    return UsageReport(
        start=first,
        end=last,
        data=groups,
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
