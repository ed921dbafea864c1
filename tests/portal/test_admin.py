"""/admin: operators only; plan changes, suspensions, flags, announcements, all audited."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from test_pages import create_key_via_page, embed

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account
from dupify.audit.models import AuditEvent
from dupify.mail.models import OutboxMessage
from support.api import Api
from support.portal import Member, csrf_of, signed_in_member


async def make_operator(api: Api) -> Member:
    operator = await signed_in_member(api)
    with Session(api.engine) as db, db.begin():
        account = db.get(Account, operator.account_id)
        assert account is not None
        account.role = "admin"
    return operator


def audited(api: Api, actor: str) -> list[str]:
    with Session(api.engine) as db:
        return list(
            db.scalars(
                select(AuditEvent.event)
                .where(AuditEvent.actor_account_id == actor)
                .order_by(AuditEvent.id)
            )
        )


async def test_admin_is_for_operators_only(api: Api) -> None:
    assert (await api.client.get("/admin")).headers["location"].startswith("/login")
    async with await signed_in_member(api) as user:
        page = await user.client.get("/admin")
        assert page.status_code == 403 and "operators" in page.text
        token = csrf_of((await user.client.get("/dashboard")).text)
        refused = await user.client.post(
            f"/admin/accounts/{user.account_id}/plan", data={"csrf_token": token, "plan": "pro"}
        )
        assert refused.status_code == 403
    with Session(api.engine) as db:
        account = db.get(Account, user.account_id)
        assert account is not None and account.plan == "free"


async def test_operator_changes_plans_suspends_and_everything_is_audited(api: Api) -> None:
    operator, user = await make_operator(api), await signed_in_member(api)
    async with operator, user:
        secret, key_id = await create_key_via_page(api, user)
        assert await embed(api, secret) == 200
        overview = await operator.client.get("/admin")
        assert overview.status_code == 200
        assert user.email in overview.text and "verification" in overview.text  # the outbox
        token = csrf_of(overview.text)
        admin = operator.client

        async def act(path: str, **data: str) -> int:
            response = await admin.post(path, data={"csrf_token": token, **data})
            return response.status_code

        assert await act(f"/admin/accounts/{user.account_id}/plan", plan="pro") == 303
        assert await act(f"/admin/accounts/{user.account_id}/plan", plan="gold") == 400
        assert await act(f"/admin/accounts/{user.account_id}/suspend") == 303
        assert await embed(api, secret) == 403  # refused from the very next request
        assert (await user.client.get("/dashboard")).status_code == 303  # sessions ended
        assert await act(f"/admin/accounts/{user.account_id}/unsuspend") == 303
        assert await embed(api, secret) == 200
        assert await act(f"/admin/keys/{key_id}/suspend") == 303
        assert await embed(api, secret) == 403
        assert await act(f"/admin/keys/{key_id}/unsuspend") == 303
        assert await embed(api, secret) == 200
        assert await act("/admin/announce", subject="Maintenance", body="Sunday 02:00 UTC") == 303
        with Session(api.engine) as db, db.begin():
            db.add(AbuseFlag(account_id=user.account_id, key_id=key_id, kind="request_spike"))
        flags_page = await admin.get("/admin")
        assert "request_spike" in flags_page.text
        with Session(api.engine) as db:
            flag_id = db.scalars(select(AbuseFlag.id)).one()
        assert await act(f"/admin/flags/{flag_id}/resolve") == 303
        no_token = await admin.post(f"/admin/accounts/{user.account_id}/suspend")
        assert no_token.status_code == 403
        assert await act(f"/admin/accounts/{operator.account_id}/suspend") == 400
        own_actions = {"login", "logout"}
        operator_events = [e for e in audited(api, operator.account_id) if e not in own_actions]
        assert operator_events == [
            "plan_changed",
            "account_suspended",
            "account_unsuspended",
            "key_suspended",
            "key_unsuspended",
            "announcement_sent",
            "abuse_flag_resolved",
        ]
        assert await act(f"/admin/accounts/{user.account_id}/delete") == 303
        assert await embed(api, secret) == 401
    with Session(api.engine) as db:
        assert db.get(Account, user.account_id) is None
        announcements = db.scalars(
            select(OutboxMessage.to_address).where(OutboxMessage.kind == "announcement")
        ).all()
    assert operator.email in announcements
    # Deletion removes the audit rows about the account; the deletion itself stays recorded.
    assert audited(api, operator.account_id)[-1] == "account_deleted"
