"""The figures of the dashboard and the logs page, from the account's own request-log rows.

Per-day sums and latency percentiles come from `dupify.usage.queries`, as `/v1/usage`'s do, and
the quota uses the same count the limiter enforces, so the portal and the API never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.usage.models import RequestLog
from dupify.usage.queries import percentile, summarise, usage_rows

CHART_DAYS = 30
CHART_WIDTH = 720
CHART_HEIGHT = 240
CHART_MARGIN_LEFT = 48
CHART_MARGIN_BOTTOM = 28
LOG_PAGE_SIZE = 50
STATUS_FILTERS = {
    "all": "all",
    "2xx": "successful (2xx)",
    "4xx": "client errors (4xx)",
    "5xx": "server errors (5xx)",
    "errors": "all errors (4xx and 5xx)",
}


@dataclass(frozen=True)
class DayFigures:
    day: date
    requests: int
    images: int
    errors: int


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Coordinates for an inline SVG bar chart (two bars a day): drawn by the template."""

    width: int
    height: int
    requests: list[Bar]
    images: list[Bar]
    ticks: list[tuple[float, str]]  # y, label
    day_labels: list[tuple[float, str]]  # x, label


@dataclass(frozen=True)
class Summary:
    days: list[DayFigures]
    requests: int
    images: int
    errors: int
    p50: float | None
    p95: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def _window(today: date) -> tuple[datetime, datetime, list[date]]:
    first = today - timedelta(days=CHART_DAYS - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)
    return since, until, [first + timedelta(days=offset) for offset in range(CHART_DAYS)]


def last_30_days(db: Session, account_id: str, now: datetime) -> Summary:
    since, until, days = _window(now.astimezone(UTC).date())
    rows = usage_rows(db, account_id, since, until)
    groups, totals = summarise(rows)
    per_day: dict[date, list[int]] = {day: [0, 0, 0] for day in days}
    for group in groups:
        figures = per_day.setdefault(group.date, [0, 0, 0])
        figures[0] += group.requests
        figures[1] += group.images
        figures[2] += group.errors
    latencies = [float(row.latency_ms) for row in rows]
    return Summary(
        days=[DayFigures(day, *per_day[day]) for day in days],
        requests=totals.requests,
        images=totals.images,
        errors=totals.errors,
        p50=percentile(latencies, 0.50),
        p95=percentile(latencies, 0.95),
    )


def _nice_ceiling(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least the largest value."""
    if value <= 5:
        return 5
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        ceiling: int = step * magnitude
        if ceiling >= value:
            return ceiling
    return value


def chart_of(summary: Summary) -> Chart:
    top = _nice_ceiling(
        max([0, *(d.requests for d in summary.days), *(d.images for d in summary.days)])
    )
    plot_width = CHART_WIDTH - CHART_MARGIN_LEFT - 8
    plot_height = CHART_HEIGHT - CHART_MARGIN_BOTTOM - 8
    slot = plot_width / len(summary.days)
    bar_width = max(1.0, slot * 0.4)
    requests: list[Bar] = []
    images: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for index, day in enumerate(summary.days):
        left = CHART_MARGIN_LEFT + index * slot + slot * 0.1
        for series, value, offset, noun in (
            (requests, day.requests, 0.0, "requests"),
            (images, day.images, bar_width, "images"),
        ):
            height = plot_height * value / top
            series.append(
                Bar(
                    x=round(left + offset, 1),
                    y=round(8 + plot_height - height, 1),
                    width=round(bar_width, 1),
                    height=round(height, 1),
                    label=f"{day.day.isoformat()}: {value} {noun}",
                )
            )
        if index % 5 == 0 or index == len(summary.days) - 1:
            labels.append((round(left + bar_width, 1), day.day.strftime("%m-%d")))
    ticks = [
        (round(8 + plot_height - plot_height * fraction, 1), str(int(top * fraction)))
        for fraction in (0, 0.25, 0.5, 0.75, 1)
    ]
    return Chart(CHART_WIDTH, CHART_HEIGHT, requests, images, ticks, labels)


def latest_errors(db: Session, account_id: str, limit: int = 10) -> list[RequestLog]:
    query = (
        select(RequestLog)
        .where(RequestLog.account_id == account_id, RequestLog.status >= 400)
        .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        .limit(limit)
    )
    return list(db.scalars(query))


@dataclass(frozen=True)
class LogFilter:
    status: str = "all"
    endpoint: str = ""
    start: date | None = None
    end: date | None = None
    page: int = 1


def account_endpoints(db: Session, account_id: str) -> list[str]:
    query = select(RequestLog.endpoint).where(RequestLog.account_id == account_id).distinct()
    return sorted(db.scalars(query))


def log_page(db: Session, account_id: str, chosen: LogFilter) -> tuple[list[RequestLog], int]:
    """One page of the account's log, newest first, and the number of matching rows."""
    conditions = [RequestLog.account_id == account_id]
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
    if chosen.start is not None:
        conditions.append(
            RequestLog.created_at >= datetime.combine(chosen.start, time.min, tzinfo=UTC)
        )
    if chosen.end is not None and chosen.end < date.max:  # no day after date.max to stop at
        after = datetime.combine(chosen.end + timedelta(days=1), time.min, tzinfo=UTC)
        conditions.append(RequestLog.created_at < after)
    total = int(db.scalar(select(func.count()).select_from(RequestLog).where(*conditions)) or 0)
    rows = db.scalars(
        select(RequestLog)
        .where(*conditions)
        .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        .offset((chosen.page - 1) * LOG_PAGE_SIZE)
        .limit(LOG_PAGE_SIZE)
    )
    return list(rows), total
