"""The dashboard (30-day chart, quota, error rate, latency, latest errors) and the logs page."""

from __future__ import annotations

import asyncio
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.db import utcnow
from dupify.limits.ratelimit import month_of
from dupify.portal import usage_views
from dupify.portal.context import Visitor, member
from dupify.portal.usage_views import LOG_PAGE_SIZE, STATUS_FILTERS, LogFilter
from dupify.usage.models import RequestLog

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    account = v.account
    now = utcnow()
    # This process's buffered log rows are written first, so a call made a moment ago shows.
    await v.runtime.recorder.flush()

    def load() -> tuple[usage_views.Summary, list[RequestLog]]:
        return (
            usage_views.last_30_days(v.db, account.id, now),
            usage_views.latest_errors(v.db, account.id),
        )

    summary, errors = await asyncio.to_thread(load)
    plan = v.runtime.settings.plan(account.plan)
    used = await v.runtime.meter.images_used_this_month(account.id, now)
    _, renews = month_of(now)
    return v.render(
        "dashboard.html",
        summary=summary,
        chart=usage_views.chart_of(summary),
        latest_errors=errors,
        plan_name=account.plan,
        plan=plan,
        quota_used=used,
        quota_left=max(0, plan.images_per_month - used),
        renews=renews.date(),
    )


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@router.get("/logs")
async def logs(
    status: str = "all",
    endpoint: str = "",
    start: str = "",
    end: str = "",
    page: str = "1",
    v: Visitor = Depends(member),
) -> Response:
    assert v.account is not None
    account_id = v.account.id
    errors: dict[str, str] = {}
    if status not in STATUS_FILTERS:
        errors["status"] = "Choose one of the offered statuses."
        status = "all"
    first, last = _day(start), _day(end)
    if start and first is None:
        errors["start"] = "Enter the start date as YYYY-MM-DD."
    if end and last is None:
        errors["end"] = "Enter the end date as YYYY-MM-DD."
    if first and last and last < first:
        errors["end"] = "The end date must not be before the start date."
        last = None
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    number = int(page) if page.isdecimal() and 0 < int(page) < 100_000 else 1
    chosen = LogFilter(status=status, endpoint=endpoint, start=first, end=last, page=number)
    await v.runtime.recorder.flush()

    def load() -> tuple[list[RequestLog], int, list[str]]:
        rows, total = usage_views.log_page(v.db, account_id, chosen)
        return rows, total, usage_views.account_endpoints(v.db, account_id)

    rows, total, endpoints = await asyncio.to_thread(load)
    pages = max(1, -(-total // LOG_PAGE_SIZE))
    query = {"status": status, "endpoint": endpoint, "start": start, "end": end}

    def page_link(target: int) -> str:
        return "/logs?" + urlencode({**query, "page": str(target)})

    return v.render(
        "logs.html",
        status=400 if errors else 200,
        errors=errors,
        rows=rows,
        total=total,
        page=number,
        pages=pages,
        previous_link=page_link(number - 1) if number > 1 else None,
        next_link=page_link(number + 1) if number < pages else None,
        endpoints=endpoints,
        status_filters=STATUS_FILTERS,
        chosen=query,
    )
