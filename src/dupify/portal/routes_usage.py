"""The dashboard (7/30/90-day charts, breakdowns by key name and endpoint, quota bar, latest
errors, a quick start while there is nothing to show) and the request logs (filters, pages that
keep them, and a CSV download of what is filtered)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.db import utcnow
from dupify.limits.ratelimit import month_of
from dupify.portal import usage_views
from dupify.portal.context import Visitor, member
from dupify.portal.snippets import quick_start
from dupify.usage.models import RequestLog
from dupify.usage.queries import (
    LOG_PAGE_SIZE,
    NO_KEY,
    STATUS_FILTERS,
    LogFilter,
    account_endpoints,
    latest_errors,
    log_page,
    log_rows,
)

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard(range: str = "", v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    account = v.account
    days = int(range) if range in {str(days) for days in usage_views.RANGES} else 30
    now = utcnow()
    # This process's buffered log rows are written first, so a call made a moment ago shows.
    await v.runtime.recorder.flush()

    def load() -> tuple[usage_views.Summary, list[RequestLog], dict[str, str]]:
        return (
            usage_views.summary_of(v.db, account.id, now, days),
            latest_errors(v.db, account.id),
            usage_views.key_names(v.db, account.id),
        )

    summary, errors, names = await asyncio.to_thread(load)
    plan = v.runtime.settings.plan(account.plan)
    used = await v.runtime.meter.images_used_this_month(account.id, now)
    _, renews = month_of(now)
    return v.render(
        "dashboard.html",
        summary=summary,
        days=days,
        ranges=usage_views.RANGES,
        charts=usage_views.charts_of(summary),
        latest_errors=errors,
        key_name=lambda key_id: usage_views.caller_name(key_id, names),
        plan_name=account.plan,
        plan=plan,
        quota_used=used,
        quota_left=max(0, plan.images_per_month - used),
        quota_percent=min(100, round(100 * used / plan.images_per_month))
        if plan.images_per_month
        else 100,
        renews=renews.date(),
        quick_start_sections=quick_start(v.link(""), None, v.runtime.settings.default_model)
        if summary.requests == 0
        else None,
        has_keys=bool(names),
    )


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _chosen(
    status: str, endpoint: str, key: str, start: str, end: str, page: str
) -> tuple[LogFilter, dict[str, str]]:
    """The filter the query asks for, and what is wrong with it (each wrong part is dropped)."""
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
    chosen = LogFilter(
        status=status, endpoint=endpoint, key=key[:64], start=first, end=last, page=number
    )
    return chosen, errors


@router.get("/logs")
async def logs(
    status: str = "all",
    endpoint: str = "",
    key: str = "",
    start: str = "",
    end: str = "",
    page: str = "1",
    v: Visitor = Depends(member),
) -> Response:
    assert v.account is not None
    account_id = v.account.id
    chosen, errors = _chosen(status, endpoint, key, start, end, page)
    await v.runtime.recorder.flush()

    def load() -> tuple[list[RequestLog], int, list[str], dict[str, str]]:
        rows, total = log_page(v.db, account_id, chosen)
        names = usage_views.key_names(v.db, account_id)
        return rows, total, account_endpoints(v.db, account_id), names

    rows, total, endpoints, names = await asyncio.to_thread(load)
    pages = max(1, -(-total // LOG_PAGE_SIZE))
    query = {
        "status": chosen.status,
        "endpoint": endpoint,
        "key": chosen.key,
        "start": start,
        "end": end,
    }

    def page_link(target: int) -> str:
        return "/logs?" + urlencode({**query, "page": str(target)})

    return v.render(
        "logs.html",
        status=400 if errors else 200,
        errors=errors,
        rows=rows,
        total=total,
        page=chosen.page,
        pages=pages,
        previous_link=page_link(chosen.page - 1) if chosen.page > 1 else None,
        next_link=page_link(chosen.page + 1) if chosen.page < pages else None,
        csv_link="/logs.csv?" + urlencode(query),
        endpoints=endpoints,
        keys=sorted(names.items(), key=lambda item: item[1].lower()),
        no_key=NO_KEY,
        key_name=lambda key_id: usage_views.caller_name(key_id, names),
        status_filters=STATUS_FILTERS,
        chosen=query,
    )


CSV_COLUMNS = (
    "time_utc",
    "request_id",
    "endpoint",
    "status",
    "error_code",
    "latency_ms",
    "images",
    "cached_images",
    "bytes_in",
    "key_name",
    "key_id",
)


def _cell(value: object) -> str:
    """A spreadsheet would run a cell starting with =, +, - or @ as a formula: key names are the
    account holder's own text, so such a cell gets a leading apostrophe (OWASP's advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/logs.csv")
async def logs_csv(
    status: str = "all",
    endpoint: str = "",
    key: str = "",
    start: str = "",
    end: str = "",
    v: Visitor = Depends(member),
) -> Response:
    assert v.account is not None
    account_id = v.account.id
    chosen, _ = _chosen(status, endpoint, key, start, end, "1")
    await v.runtime.recorder.flush()

    def build() -> str:
        names = usage_views.key_names(v.db, account_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for row in log_rows(v.db, account_id, chosen):
            writer.writerow(
                [
                    row.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    _cell(row.request_id),
                    row.endpoint,
                    row.status,
                    row.error_code or "",
                    f"{row.latency_ms:.2f}",
                    row.images,
                    row.cached_images,
                    row.bytes_in,
                    _cell(usage_views.caller_name(row.key_id, names)),
                    row.key_id or "",
                ]
            )
        return out.getvalue()

    body = await asyncio.to_thread(build)
    filename = f"dupify-logs-{utcnow().strftime('%Y%m%d-%H%M%S')}.csv"
    response = Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
    return v.apply_cookies(response)
