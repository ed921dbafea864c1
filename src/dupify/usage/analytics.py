"""Service analytics for operators: aggregate usage by day, plan and endpoint (PRIVACY row 15).

Accounts that objected to the use of their usage data (`pref_usage_analytics = False`) are left
out entirely. Requests without an account (a missing or invalid key) count under plan "-".
Figures are aggregates only: no account id, email or key appears in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dupify.accounts.models import Account
from dupify.usage.models import RequestLog

NO_ACCOUNT_PLAN = "-"


@dataclass(frozen=True)
class UsageAggregate:
    day: str  # YYYY-MM-DD, UTC
    plan: str
    endpoint: str
    requests: int
    errors: int  # status >= 400
    images: int
    cached_images: int
    mean_latency_ms: float


def _utc_day(session: Session) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        # date() of a timestamptz would use the connection's time zone; the day is a UTC day.
        return func.to_char(func.timezone("UTC", RequestLog.created_at), "YYYY-MM-DD")
    # SQLite stores UTC text 'YYYY-MM-DD HH:MM:SS…'; date() keeps the day.
    return func.date(RequestLog.created_at)


def counted_requests() -> ColumnElement[bool]:
    """The request-log rows service analytics may use: no account, or one that did not object."""
    return or_(RequestLog.account_id.is_(None), Account.pref_usage_analytics.is_(True))


def usage_by_day_plan_endpoint(
    session: Session, *, since: datetime, until: datetime
) -> list[UsageAggregate]:
    day = _utc_day(session).label("day")
    plan = func.coalesce(Account.plan, NO_ACCOUNT_PLAN).label("plan")
    query = (
        select(
            day,
            plan,
            RequestLog.endpoint,
            func.count(),
            func.sum(case((RequestLog.status >= 400, 1), else_=0)),
            func.coalesce(func.sum(RequestLog.images), 0),
            func.coalesce(func.sum(RequestLog.cached_images), 0),
            func.avg(RequestLog.latency_ms),
        )
        .select_from(RequestLog)
        .outerjoin(Account, Account.id == RequestLog.account_id)
        .where(RequestLog.created_at >= since, RequestLog.created_at < until, counted_requests())
        .group_by(day, plan, RequestLog.endpoint)
        .order_by(day, plan, RequestLog.endpoint)
    )
    return [
        UsageAggregate(
            day=str(row[0]),
            plan=str(row[1]),
            endpoint=str(row[2]),
            requests=int(row[3]),
            errors=int(row[4] or 0),
            images=int(row[5]),
            cached_images=int(row[6]),
            mean_latency_ms=round(float(row[7] or 0.0), 1),
        )
        for row in session.execute(query)
    ]
