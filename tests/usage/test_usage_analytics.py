"""Service analytics leave out accounts that objected to the use of their usage data (row 15)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from dupify.accounts.models import Account
from dupify.db import session_factory, transaction, utcnow
from dupify.usage.analytics import NO_ACCOUNT_PLAN, usage_by_day_plan_endpoint
from support.api import Api


async def test_an_objecting_accounts_usage_is_not_counted(api: Api) -> None:
    counted = api.new_key(email="counted@example.com")
    objector = api.new_key(email="objector@example.com")
    sessions = session_factory(api.engine)
    with transaction(sessions) as session:
        session.execute(
            update(Account)
            .where(Account.email == "objector@example.com")
            .values(pref_usage_analytics=False, plan="pro")
        )
    for _ in range(3):
        assert (
            await api.client.get("/v1/models", headers={"Authorization": f"Bearer {counted}"})
        ).status_code == 200
    for _ in range(5):
        assert (
            await api.client.get("/v1/models", headers={"Authorization": f"Bearer {objector}"})
        ).status_code == 200
    missing = await api.client.get("/v1/models")  # no account at all
    assert missing.status_code == 401
    await api.flush_usage()

    now = utcnow()
    since, until = now - timedelta(days=1), now + timedelta(minutes=1)
    with sessions() as session:
        rows = usage_by_day_plan_endpoint(session, since=since, until=until)
    by_plan = {(row.plan, row.endpoint): row for row in rows}
    assert "pro" not in {row.plan for row in rows}  # the objector's plan never shows up
    free = by_plan[("free", "GET /v1/models")]
    assert (free.requests, free.errors) == (3, 0)
    anonymous = by_plan[(NO_ACCOUNT_PLAN, "GET /v1/models")]
    assert (anonymous.requests, anonymous.errors) == (1, 1)
    assert {row.day for row in rows} == {now.strftime("%Y-%m-%d")}
    assert sum(row.requests for row in rows) == 4

    # Withdrawing the objection brings the account's figures back.
    with transaction(sessions) as session:
        session.execute(
            update(Account)
            .where(Account.email == "objector@example.com")
            .values(pref_usage_analytics=True)
        )
    with sessions() as session:
        rows = usage_by_day_plan_endpoint(session, since=since, until=until)
    assert sum(row.requests for row in rows if row.plan == "pro") == 5
