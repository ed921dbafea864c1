"""The figures of the dashboard (a 7, 30 or 90-day range: per-day charts, breakdowns by key name
and endpoint) and the key names of the logs page, from the account's own request-log rows.

Per-day sums and latency percentiles come from `dupify.usage.queries`, as `/v1/usage`'s do, and
the quota uses the same count the limiter enforces, so the portal and the API never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.keys.models import ApiKey
from dupify.portal.charts import Chart, Series, chart
from dupify.usage.queries import NO_KEY, percentile, usage_rows

RANGES = (7, 30, 90)
DEFAULT_RANGE = 30
PORTAL_CALLER = "signed in (playground)"


@dataclass(frozen=True)
class DayFigures:
    day: date
    requests: int
    images: int
    errors: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class Breakdown:
    """One key's or endpoint's share of the range."""

    name: str
    filter_value: str  # what the logs page filters by to show these rows
    requests: int
    images: int
    errors: int
    p95: float | None


@dataclass(frozen=True)
class Summary:
    days: list[DayFigures]
    requests: int
    images: int
    errors: int
    p50: float | None
    p95: float | None
    by_key: list[Breakdown]
    by_endpoint: list[Breakdown]
    by_model: list[Breakdown]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def key_names(db: Session, account_id: str) -> dict[str, str]:
    """The account's key ids and the names their holder gave them (revoked keys too)."""
    query = select(ApiKey.id, ApiKey.name).where(ApiKey.account_id == account_id)
    return {key_id: name for key_id, name in db.execute(query)}


def caller_name(key_id: str | None, names: dict[str, str]) -> str:
    if key_id is None:
        return PORTAL_CALLER
    return names.get(key_id, "a deleted key")


def _breakdown(groups: dict[str, list[Any]], name_of: dict[str, str]) -> list[Breakdown]:
    rows = [
        Breakdown(
            name=name_of.get(value, value),
            filter_value=value,
            requests=len(members),
            images=sum(member.images for member in members),
            errors=sum(1 for member in members if member.status >= 400),
            p95=percentile([float(member.latency_ms) for member in members], 0.95),
        )
        for value, members in groups.items()
    ]
    return sorted(rows, key=lambda row: (-row.requests, row.name))


def summary_of(db: Session, account_id: str, now: datetime, days: int) -> Summary:
    """The account's figures for the `days` UTC days up to and including today."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)
    rows = usage_rows(db, account_id, since, until)
    per_day: dict[date, list[Any]] = defaultdict(list)
    per_key: dict[str, list[Any]] = defaultdict(list)
    per_endpoint: dict[str, list[Any]] = defaultdict(list)
    per_model: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        per_day[row.created_at.astimezone(UTC).date()].append(row)
        per_key[row.key_id or NO_KEY].append(row)
        per_endpoint[row.endpoint].append(row)
        if row.model:  # requests refused before a model was chosen have none
            per_model[row.model].append(row)
    figures = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        members = per_day.get(day, [])
        latencies = [float(member.latency_ms) for member in members]
        figures.append(
            DayFigures(
                day=day,
                requests=len(members),
                images=sum(member.images for member in members),
                errors=sum(1 for member in members if member.status >= 400),
                p50=percentile(latencies, 0.50),
                p95=percentile(latencies, 0.95),
            )
        )
    names = key_names(db, account_id)
    key_labels = {key_id: caller_name(key_id, names) for key_id in per_key if key_id != NO_KEY}
    key_labels[NO_KEY] = PORTAL_CALLER
    latencies = [float(row.latency_ms) for row in rows]
    return Summary(
        days=figures,
        requests=len(rows),
        images=sum(row.images for row in rows),
        errors=sum(1 for row in rows if row.status >= 400),
        p50=percentile(latencies, 0.50),
        p95=percentile(latencies, 0.95),
        by_key=_breakdown(per_key, key_labels),
        by_endpoint=_breakdown(per_endpoint, {}),
        by_model=_breakdown(per_model, {}),
    )


def charts_of(summary: Summary) -> list[Chart]:
    days: Sequence[date] = [figures.day for figures in summary.days]
    return [
        chart(
            "chart-requests",
            "Requests and images per day",
            days,
            [
                Series("requests", "s1", [d.requests for d in summary.days]),
                Series("images", "s2", [d.images for d in summary.days]),
            ],
        ),
        chart(
            "chart-errors",
            "Errors per day",
            days,
            [Series("errors", "s3", [d.errors for d in summary.days])],
        ),
        chart(
            "chart-latency",
            "Latency per day, p50 and p95",
            days,
            [
                Series("p50", "s1", [d.p50 for d in summary.days], unit=" ms"),
                Series("p95", "s4", [d.p95 for d in summary.days], unit=" ms"),
            ],
            kind="lines",
        ),
    ]
